"""Governance: stewards revoke expert versions; the registry, the MoE and serving follow.

Why: a data owner can withdraw consent at any time. Revoking tags the version (`status=revoked`, who, when, why),
removes every alias on it, appends an audit record, marks every `flexo-moe` version that held it
`status=revoked_dependency`, and re-assembles the MoE without it (the `reassemble` callable; by default
`assemble_and_register`), which moves `serving`. After that no path loads it: `tasks.registry.names.check_usable`
(behind every download and resolution) refuses it with a RevokedError naming the revocation.

A steward who revokes in the MLflow UI, the client or REST (a status tag, an alias removed or moved) does only the first
step; serving masks the expert from then on (`tasks.registry.consent`), and `follow_revocations`, run on a schedule,
does the rest: it marks the MoE versions holding it and re-assembles, so the registry and `serving` say so too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.errors import ConfigError, FlexoError
from tasks.registry import audit
from tasks.registry.certificate import certify, write_certificate
from tasks.registry.consent import holdings, withdrawn_in
from tasks.registry.download import expert_files, fetch, moe_dir
from tasks.registry.moe_version import register_moe
from tasks.registry.names import (
    SERVING_ALIAS,
    STATUS_REVOKED,
    STATUS_REVOKED_DEPENDENCY,
    TAG_REVOKED_AT,
    TAG_REVOKED_BY,
    TAG_REVOKED_DEPENDENCY,
    TAG_REVOKED_REASON,
    TAG_STATUS,
    VersionRef,
    expert_model_name,
)
from tasks.registry.register import describe
from tasks.registry.resolve import moe_versions_containing, resolve_active_experts
from tasks.registry.store import by_alias, client, get_version

Reassemble = Callable[[Profile], VersionRef | None]
FOLLOWER = "registry-follower"  # the actor of what `follow_revocations` does (the steward's act was the tag or alias)


@dataclass(frozen=True)
class Revocation:
    """What a revocation did, for the CLI, the Prefect artifact and tests."""

    expert: VersionRef
    removed_aliases: list[str]
    revoked_dependencies: list[str]  # "flexo-moe:<version>" that held the expert
    new_moe: VersionRef | None
    certificate: dict[str, Any] | None = None  # tasks.registry.certificate, when a served MoE held it and was rebuilt


def assemble_and_register(profile: Profile) -> VersionRef:
    """Assemble the MoE from every active, non-revoked expert (sha256-verified) and register it as `serving`."""
    from tasks.training.assemble import assemble

    refs = resolve_active_experts(profile)
    files = expert_files(profile, refs)
    out = RunPaths(profile).registry_cache / "assembled" / str(time.time_ns())
    assembled = assemble(profile, files, expected_sha256=[ref.sha256 for ref in refs], out_dir=out)
    return register_moe(profile, assembled, refs, serving=True)


def revoke(
    profile: Profile,
    domain: str,
    version: str | int,
    reason: str,
    by: str | None = None,
    reassemble: Reassemble | None = assemble_and_register,
) -> Revocation:
    """Revoke `flexo-expert-<domain>` version `version` (see the module docstring). `reassemble=None` skips re-assembly
    (the dependent MoE versions then lose `serving`, so nothing serves the revoked expert)."""
    if not reason or not reason.strip():
        raise ConfigError("revoke: --reason is required (it is recorded in the audit trail)")
    name = expert_model_name(profile, domain)
    ref = get_version(profile, name, version)
    if ref.status == STATUS_REVOKED:
        raise ConfigError(
            f"{ref.label} is already revoked (by {ref.tags.get(TAG_REVOKED_BY)} at {ref.tags.get(TAG_REVOKED_AT)})"
        )
    mlclient = client(profile)
    who = audit.actor(by)
    previous = _served_holding(profile, ref) if reassemble is not None else None
    _mark_revoked(mlclient, ref, who, reason)
    dependents = [
        _mark_dependent(mlclient, moe, f"{ref.name}:{ref.version}", who)
        for moe in moe_versions_containing(profile, domain, ref.version)
    ]
    new_moe = _reassemble(profile, mlclient, ref, who, dependents, reassemble)
    certificate = _certificate(profile, mlclient, ref, who, previous, new_moe)
    return Revocation(get_version(profile, name, ref.version), list(ref.aliases), dependents, new_moe, certificate)


def _served_holding(profile: Profile, ref: VersionRef) -> tuple[VersionRef, Path] | None:
    """The `serving` MoE (verified, downloaded) when it holds exactly this expert version: what the certificate
    compares the re-assembled one with."""
    serving = by_alias(profile, profile.registry.moe_model, SERVING_ALIAS)
    if serving is None or holdings(serving).get(ref.domain) != ref.version:
        return None
    try:
        return serving, moe_dir(fetch(profile, serving))
    except FlexoError:
        return None  # an unusable serving MoE blocks the certificate, never the revocation


def _certificate(
    profile: Profile,
    mlclient: Any,
    ref: VersionRef,
    who: str,
    previous: tuple[VersionRef, Path] | None,
    new_moe: VersionRef | None,
) -> dict[str, Any] | None:
    """The revocation certificate, written and recorded in the audit trail; a failure to compute it is recorded too
    (the revocation itself stands)."""
    if previous is None or new_moe is None:
        return None
    try:
        certificate = certify(profile, ref, previous, (new_moe, moe_dir(fetch(profile, new_moe))))
    except FlexoError as err:
        audit.record(mlclient, ref.name, ref.version, "certificate_failed", who, error=str(err)[:1000])
        return None
    certificate["path"] = str(write_certificate(profile, certificate))
    audit.record(mlclient, ref.name, ref.version, "revocation_certificate", who, **certificate)
    return certificate


def _mark_revoked(mlclient: Any, ref: VersionRef, who: str, reason: str) -> None:
    """Tag the version revoked (who, when, why), take every alias off it and record it in the audit trail."""
    # The first write is the status tag: without permission on this model, nothing else happens.
    mlclient.set_model_version_tag(ref.name, ref.version, TAG_STATUS, STATUS_REVOKED)
    revocation = ((TAG_REVOKED_BY, who), (TAG_REVOKED_AT, audit.now_iso()), (TAG_REVOKED_REASON, reason))
    for key, value in revocation:
        mlclient.set_model_version_tag(ref.name, ref.version, key, value)
    for alias in ref.aliases:
        mlclient.delete_registered_model_alias(ref.name, alias)
    audit.record(mlclient, ref.name, ref.version, "revoked", who, reason=reason, removed_aliases=list(ref.aliases))
    describe(mlclient, ref.name, ref.version)  # the version page says it is revoked, by whom and why


def _mark_dependent(mlclient: Any, moe: VersionRef, held: str, who: str) -> str:
    """Mark a `flexo-moe` version holding the revoked expert `held` ("name:version") `revoked_dependency` and unserve
    it; its "name:version"."""
    mlclient.set_model_version_tag(moe.name, moe.version, TAG_STATUS, STATUS_REVOKED_DEPENDENCY)
    mlclient.set_model_version_tag(moe.name, moe.version, TAG_REVOKED_DEPENDENCY, held)
    for alias in moe.aliases:
        mlclient.delete_registered_model_alias(moe.name, alias)
    audit.record(
        mlclient, moe.name, moe.version, "revoked_dependency", who, expert=held, removed_aliases=list(moe.aliases)
    )
    card = mlclient.get_model_version(moe.name, moe.version).description or ""
    note = f"**Status: {STATUS_REVOKED_DEPENDENCY}**: holds `{held}`, which was revoked; it is no longer served.\n\n"
    mlclient.update_model_version(moe.name, moe.version, description=note + card)
    return f"{moe.name}:{moe.version}"


def _reassemble(
    profile: Profile,
    mlclient: Any,
    ref: VersionRef,
    who: str,
    dependents: list[str],
    reassemble: Reassemble | None,
) -> VersionRef | None:
    """Re-assemble the MoE without the revoked expert when a served MoE held it; a failure still leaves it revoked,
    and the error says so."""
    try:
        new_moe = reassemble(profile) if reassemble is not None and dependents else None
    except FlexoError as err:
        audit.record(mlclient, ref.name, ref.version, "reassembly_failed", who, error=str(err)[:1000])
        raise type(err)(
            f"{ref.label} IS revoked (tags, aliases, audit done; {', '.join(dependents)} marked revoked_dependency and "
            f"no longer served), but re-assembling flexo-moe without it failed: {err}. Fix that and run the assembly "
            "again."
        ) from err
    if new_moe is not None:
        audit.record(
            mlclient,
            new_moe.name,
            new_moe.version,
            "reassembled_after_revocation",
            who,
            revoked=f"{ref.name}:{ref.version}",
            alias=SERVING_ALIAS,
        )
    return new_moe


def follow_revocations(profile: Profile, reassemble: Reassemble = assemble_and_register) -> dict[str, Any]:
    """Make a revocation done outside `flexo revoke` reach the registry and `serving`: when the `serving` MoE holds
    experts the registry withdrew, each is recorded in the audit trail, every `flexo-moe` version holding it is marked
    `revoked_dependency` (unserved) and the MoE is re-assembled without them, moving `serving`. Returns what it found
    (`withdrawn` {domain: why}) and did; nothing withdrawn, nothing done."""
    serving = by_alias(profile, profile.registry.moe_model, SERVING_ALIAS)
    gone = withdrawn_in(profile, serving) if serving is not None else {}
    if serving is None or not gone:
        return {"withdrawn": {}, "revoked_dependencies": [], "new_moe": ""}
    mlclient, held = client(profile), holdings(serving)
    dependents: list[str] = []
    for domain, why in sorted(gone.items()):
        name = expert_model_name(profile, domain)
        audit.record(mlclient, name, held[domain], "withdrawal_detected", FOLLOWER, reason=why)
        dependents += [
            _mark_dependent(mlclient, moe, f"{name}:{held[domain]}", FOLLOWER)
            for moe in moe_versions_containing(profile, domain, held[domain])
            if moe.status != STATUS_REVOKED_DEPENDENCY
        ]
    new_moe = reassemble(profile)
    if new_moe is not None:
        withdrawn_versions = ",".join(f"{domain}:{held[domain]}" for domain in sorted(gone))
        audit.record(
            mlclient,
            new_moe.name,
            new_moe.version,
            "reassembled_after_revocation",
            FOLLOWER,
            revoked=withdrawn_versions,
            alias=SERVING_ALIAS,
        )
    return {"withdrawn": gone, "revoked_dependencies": dependents, "new_moe": new_moe.label if new_moe else ""}


def audit_trail(profile: Profile) -> list[audit.AuditRecord]:
    """Every audit record of the flexo registered models, oldest first."""
    return audit.trail(client(profile), _model_prefix(profile))


def audit_breaks(profile: Profile) -> list[str]:
    """Where the trail's hash chain is broken (records removed or changed outside flexo); empty when whole."""
    return audit.verify(client(profile), _model_prefix(profile))


def _model_prefix(profile: Profile) -> str:
    return profile.registry.moe_model.split("-")[0] + "-"
