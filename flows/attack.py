"""Flow `attack`: the training-data extraction attack and the admission gate for one domain's expert."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import steps as pt
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile


@flow(name="attack", result_serializer="json", log_prints=True)
def attack(
    profile: str | Profile | None = None, domain: str | None = None, fail_on_error: bool = True
) -> list[dict[str, Any]]:
    """Attack M_pub, the dense model and FlexOlmo with/without the expert (cached on the expert's sha256 and the code)."""
    p = pt.as_profile(profile)
    d = domain or p.attack.domain
    expert_file = RunPaths(p).expert_dir(d) / "expert.safetensors"
    sha = pt.file_sha256(expert_file) if expert_file.exists() else ""
    out = [
        pt.run_step(
            "attack", "attack", p, d, sha, pt.code_fingerprint("attack"), domain=d, expect=RunPaths(p).attack_dir
        )
    ]
    rates = out[0].result.get("rates") or {}
    pt.publish_table(
        "flexo-attack", [{"model": k, "extraction_rate": v} for k, v in rates.items()], f"extraction rates ({d})"
    )
    pt.publish("flexo-attack-summary", f"attack {d} ({p.name})", out, {"report": str(out[0].result.get("report", ""))})
    return pt.finish(out, fail_on_error)
