"""Flow `attack`: the training-data extraction attack and the admission gate for one domain's expert."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.inputs import as_profile
from flows.outcomes import finish, publish, publish_table
from flows.runner import run_step
from flows.steps import code_fingerprint
from tasks.core.artifacts import EXPERT_FILE, RunPaths
from tasks.core.config import Profile
from tasks.core.hashing import file_sha256


@flow(name="attack", result_serializer="json", log_prints=True)
def attack(
    profile: str | Profile | None = None, domain: str | None = None, fail_on_error: bool = True
) -> list[dict[str, Any]]:
    """Attack M_pub, the dense model and FlexOlmo with/without the expert (cached on the expert's sha256 and the
    code)."""
    p = as_profile(profile)
    d = domain or p.attack.domain
    paths = RunPaths(p)
    expert_file = paths.expert_dir(d) / EXPERT_FILE
    sha = file_sha256(expert_file) if expert_file.exists() else ""
    out = [run_step("attack", "attack", p, d, sha, code_fingerprint("attack"), domain=d, expect=paths.attack_dir)]
    result = out[0].result  # tasks.privacy.attack.attack_and_record's summary
    rates = result.get("rates") or {}
    publish_table(
        "flexo-attack", [{"model": k, "extraction_rate": v} for k, v in rates.items()], f"extraction rates ({d})"
    )
    publish("flexo-attack-summary", f"attack {d} ({p.name})", out, {"report": str(result.get("report", ""))})
    return finish(out, fail_on_error)
