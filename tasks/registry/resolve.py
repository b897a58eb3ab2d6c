"""Which versions are in use: each owner's `active` expert, the `serving` MoE, and the MoE versions holding an expert.

Every answer passes `check_usable`, so no caller can be handed a revoked version (DESIGN.md invariant 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tasks.core.config import Profile
from tasks.core.errors import ConfigError
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
    """The `active`, non-revoked version of each domain's expert (all owners' domains that have one, by default).

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
        check_usable(ref)
        refs.append(ref)
    return refs


def resolve_serving_moe(profile: Profile, version: str | None = None) -> tuple[VersionRef, Path]:
    """The `serving` (or given) `flexo-moe` version, refused if revoked, downloaded and verified: (ref, pyfunc dir)."""
    name = profile.registry.moe_model
    ref = get_version(profile, name, version) if version else by_alias(profile, name, SERVING_ALIAS)
    if ref is None:
        raise ConfigError(f"{name} has no `{SERVING_ALIAS}` version; run the pipeline (or `flexo assemble`) first")
    return ref, fetch(profile, ref)


def moe_versions_containing(profile: Profile, domain: str, version: str) -> list[VersionRef]:
    """Every `flexo-moe` version whose tags say it holds `domain` at `version`."""
    return [
        ref
        for ref in versions_if_any(profile, profile.registry.moe_model)
        if ref.tags.get(f"{EXPERT_TAG_PREFIX}{domain}") == str(version)
    ]
