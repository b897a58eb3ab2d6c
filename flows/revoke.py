"""Flow `revoke` (on demand): a steward revokes one expert version; the MoE is re-assembled without it."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.inputs import as_profile
from flows.outcomes import as_rows, publish
from flows.runner import run_step
from tasks.core.config import Profile


@flow(name="revoke", flow_run_name="revoke-{domain}-v{version}", result_serializer="json", log_prints=True)
def revoke(
    domain: str, version: str, reason: str, by: str | None = None, profile: str | Profile | None = None
) -> list[dict[str, Any]]:
    """Revoke `flexo-expert-<domain>` version `version` (never cached; retried on transient registry errors)."""
    p = as_profile(profile)
    out = [run_step("revoke", "revoke", p, domain, str(version), reason, by, domain=domain)]
    publish("flexo-revoke", f"revoke {domain} v{version}", out)
    if out[0].status == "failed":
        raise RuntimeError(f"revoke {domain} v{version} failed: {out[0].detail}")
    return as_rows(out)
