"""Flow `revoke` (on demand): a steward revokes one expert version; the MoE is re-assembled without it.
Flow `follow_revocations` (every minute): a revocation made in the MLflow UI, client or REST reaches `serving` too.

The revocation certificate (tasks.registry.certificate) is completed with the extraction rate on the revoked owner's
training documents (flows.certificate: the attack lives in tasks.privacy, above the registry).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.certificate import certify_extraction
from flows.inputs import as_profile
from flows.outcomes import as_rows, publish
from flows.runner import run_step
from tasks.core.config import Profile


@flow(name="revoke", flow_run_name="revoke-{domain}-v{version}", result_serializer="json", log_prints=True)
def revoke(
    domain: str, version: str, reason: str, by: str | None = None, profile: str | Profile | None = None
) -> list[dict[str, Any]]:
    """Revoke `flexo-expert-<domain>` version `version` (never cached; retried on transient registry errors); when a
    certificate was written, complete it with the extraction rates."""
    p = as_profile(profile)
    out = [run_step("revoke", "revoke", p, domain, str(version), reason, by, domain=domain)]
    if out[0].ok and out[0].result.get("certificate"):
        out[0].result["certificate"] = certify_extraction(p, out[0].result["certificate"], by)
        print(f"certificate: {out[0].result['certificate']['extraction']['verdict']}")
    publish("flexo-revoke", f"revoke {domain} v{version}", out)
    if out[0].status == "failed":
        raise RuntimeError(f"revoke {domain} v{version} failed: {out[0].detail}")
    return as_rows(out)


@flow(name="follow_revocations", result_serializer="json", log_prints=True)
def follow_revocations(profile: str | Profile | None = None) -> list[dict[str, Any]]:
    """When the serving MoE holds an expert the registry withdrew (however), re-assemble without it (never cached)."""
    p = as_profile(profile)
    out = [run_step("follow_revocations", "follow_revocations", p)]
    if out[0].result.get("new_moe"):
        publish("flexo-follow-revocations", f"withdrawn: {', '.join(out[0].result['withdrawn'])}", out)
    if out[0].status == "failed":
        raise RuntimeError(f"follow_revocations failed: {out[0].detail}")
    return as_rows(out)
