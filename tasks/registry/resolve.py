"""Which versions are in use: each owner's `active` expert, the `serving` MoE, and the MoE versions holding an expert.

Every answer passes `check_usable`, so no caller can be handed a revoked version (DESIGN.md invariant 5), and the
serving MoE is checked against the registry's current word on each expert inside (`tasks.registry.consent`): a path
that scores it whole is refused while it holds a withdrawn one; a path that answers requests masks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tasks.core.config import Profile
from tasks.core.errors import ConfigError
from tasks.registry.consent import check_consent
from tasks.registry.download import fetch
from tasks.registry.names import (
    ACTIVE_ALIAS,
    EXPERT_TAG_PREFIX,
    SERVING_ALIAS,
    STATUS_REVOKED,
    VersionRef,
    check_usable,
    expert_model_name,
)
from tasks.registry.store import by_alias, get_version, versions_if_any


def resolve_active_experts(profile: Profile, domains: Sequence[str] | None = None) -> list[VersionRef]:
    """The `active`, non-revoked version of each domain's expert (all owners' domains that have one, by default: a
    domain whose `active` alias was removed or moved onto a revoked version is left out, however that was done).

    A domain asked for by name must have an active version (RevokedError if its latest was revoked, ConfigError if
    none).
    """
    chosen = list(domains) if domains is not None else profile.closed_domains
    refs = []
    for domain in chosen:
        name = expert_model_name(profile, domain)
        ref = by_alias(profile, name, ACTIVE_ALIAS)
        if ref is None:
            if domains is None:
                continue
            revoked = [v for v in versions_if_any(profile, name) if v.status == STATUS_REVOKED]
            if revoked:
                check_usable(revoked[0])
            raise ConfigError(
                f"{name} has no `{ACTIVE_ALIAS}` version; register (and pass the checks of) a version first"
            )
        if domains is None and ref.status == STATUS_REVOKED:
            continue
        check_usable(ref)
        refs.append(ref)
    return refs


def serving_version(profile: Profile, version: str | None = None) -> VersionRef:
    """The `serving` (or given) `flexo-moe` version, refused if it is revoked or holds a revoked expert by its tags."""
    name = profile.registry.moe_model
    ref = get_version(profile, name, version) if version else by_alias(profile, name, SERVING_ALIAS)
    if ref is None:
        raise ConfigError(f"{name} has no `{SERVING_ALIAS}` version; run the pipeline (`flexo run`) first")
    check_usable(ref)
    return ref


def answering_moe(profile: Profile, version: str | None = None) -> tuple[VersionRef, Path]:
    """For paths that mask withdrawn experts on every answer (generate, serve): `serving_version`, downloaded and
    verified file by file (served code included): (ref, pyfunc dir)."""
    ref = serving_version(profile, version)
    return ref, fetch(profile, ref)


def resolve_serving_moe(profile: Profile, version: str | None = None) -> tuple[VersionRef, Path]:
    """For paths that score the MoE whole (evaluate, attack): `answering_moe`, refused while any expert inside is
    withdrawn: (ref, pyfunc dir)."""
    ref = serving_version(profile, version)
    check_consent(profile, ref)
    return ref, fetch(profile, ref)


def moe_versions_containing(profile: Profile, domain: str, version: str) -> list[VersionRef]:
    """Every `flexo-moe` version whose tags say it holds `domain` at `version`."""
    return [
        ref
        for ref in versions_if_any(profile, profile.registry.moe_model)
        if ref.tags.get(f"{EXPERT_TAG_PREFIX}{domain}") == str(version)
    ]
