"""Flow `evaluate`: FLEXMIX-small on M_pub, baselines, FlexOlmo and opt-out variants (tasks.evaluation.evaluate)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import steps as pt
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile


@flow(name="evaluate", result_serializer="json", log_prints=True)
def evaluate(
    profile: str | Profile | None = None,
    moe_sha: str = "",
    ablation_shas: dict[str, str] | None = None,
    fail_on_error: bool = True,
) -> list[dict[str, Any]]:
    """Run the benchmark (cached on the MoE's sha256, the ablation MoEs' and the code); publish its table."""
    p = pt.as_profile(profile)
    out = [
        pt.run_step(
            "evaluate",
            "evaluate",
            p,
            moe_sha,
            pt.code_fingerprint("evaluate"),
            dict(ablation_shas or {}),
            expect=RunPaths(p).eval_dir,
        )
    ]
    result = out[0].result
    rows = result.get("rows") or result.get("table") or []
    pt.publish_table("flexo-benchmark", rows if isinstance(rows, list) else [], "FLEXMIX-small benchmark results")
    pt.publish(
        "flexo-evaluate", f"evaluate ({p.name})", out, {"report": str(result.get("value", result.get("report", "")))}
    )
    return pt.finish(out, fail_on_error)
