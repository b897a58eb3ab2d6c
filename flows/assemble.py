"""Flow `assemble`: the MoE from every active, non-revoked expert (sha256-verified), registered as
`flexo-moe@serving`. The assembly is cached on the experts' sha256 tags; before a hit is trusted, `verify_assembly`
hashes the stored bytes (experts, the serving MoE's weights, served code and card) and asks for a re-run when the
serving version no longer stands for the active experts."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.inputs import as_profile
from flows.outcomes import finish, publish, publish_table, upstream_missing
from flows.runner import run_step
from flows.steps import code_fingerprint
from tasks.core.config import Profile


@flow(name="assemble", result_serializer="json", log_prints=True)
def assemble(profile: str | Profile | None = None, fail_on_error: bool = True) -> list[dict[str, Any]]:
    """Resolve the active experts in the registry, verify the stored bytes, assemble and register (cached on the
    exact expert sha256s)."""
    p = as_profile(profile)
    active = run_step("assemble", "active_experts", p)
    verified = run_step("assemble", "verify_assembly", p)
    out = [active, verified]
    shas = {d: v["sha256"] for d, v in active.result.items()} if active.ok else {}
    refresh = bool(verified.result.get("refresh"))
    out.append(
        upstream_missing("assemble", "assemble", None, [active, verified])
        or run_step("assemble", "assemble", p, shas, code_fingerprint("assemble"), refresh=refresh)
    )
    rows = (
        [{"domain": d, "version": v["version"], "sha256": v["sha256"][:16]} for d, v in active.result.items()]
        if active.ok
        else []
    )
    publish_table("flexo-registry-state", rows, "active expert versions inside the assembled MoE")
    publish("flexo-assemble", f"assemble ({p.name})", out)
    return finish(out, fail_on_error)
