"""Flow `evaluate`: FLEXMIX-small on M_pub, baselines, FlexOlmo and opt-out variants (tasks.evaluation.evaluate)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import flow

from flows.inputs import as_profile
from flows.outcomes import finish, publish, publish_table
from flows.runner import run_step
from flows.steps import code_fingerprint
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile


def benchmark_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The benchmark as table rows, one per (table, model), from the step's `metrics` (the evaluation's flat
    "<table>/<model>/<column>" -> value, the names MLflow records); every row has every column (None where a table
    has no such column). Keys of another shape (`seconds/total`) are not scores and are left out."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    columns: list[str] = []
    for key, value in (result.get("metrics") or {}).items():
        table, _, rest = str(key).partition("/")
        model, _, column = rest.rpartition("/")
        if not model:
            continue
        rows.setdefault((table, model), {})[column] = round(float(value), 4)
        if column not in columns:
            columns.append(column)
    return [{"table": t, "model": m, **{c: row.get(c) for c in columns}} for (t, m), row in rows.items()]


@flow(name="evaluate", result_serializer="json", log_prints=True)
def evaluate(
    profile: str | Profile | None = None,
    moe_sha: str = "",
    ablation_shas: dict[str, str] | None = None,
    fail_on_error: bool = True,
) -> list[dict[str, Any]]:
    """Run the benchmark (cached on the MoE's sha256, the ablation MoEs' and the code); publish its table."""
    p = as_profile(profile)
    out = [
        run_step(
            "evaluate",
            "evaluate",
            p,
            moe_sha,
            code_fingerprint("evaluate"),
            dict(ablation_shas or {}),
            expect=RunPaths(p).eval_dir,
        )
    ]
    result = out[0].result  # tasks.evaluation's EvalResult as JSON, with the MLflow run it was logged in
    publish_table("flexo-benchmark", benchmark_rows(result), "FLEXMIX-small benchmark results")
    publish("flexo-evaluate", f"evaluate ({p.name})", out, {"report": str(result.get("report", ""))})
    return finish(out, fail_on_error)
