"""`flexo run` (README command one) as a user runs it: its own ephemeral Prefect server, a step table, where to look,
and exit code 1 when a step failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tasks.core.config import REPO_ROOT
from tests.flows.conftest import tmp_params

pytestmark = pytest.mark.slow  # starts its own ephemeral Prefect server (about a minute on a busy machine)


def test_flexo_run_reports_each_step_and_fails_loudly(tmp_path: Path) -> None:
    params = tmp_params(tmp_path)
    (tmp_path / "data" / "code").mkdir(parents=True)
    pd.DataFrame(
        {"id": [f"c{i}" for i in range(30)], "text": [f"def f{i}(x):\n    return x + {i}" for i in range(30)]}
    ).to_parquet(tmp_path / "data" / "code" / "train.parquet")
    env = {**os.environ, "FLEXO_PARAMS": str(params), "PREFECT_HOME": str(tmp_path / "prefect"), "COLUMNS": "200"}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "-p", "tiny", "-d", "code", "-d", "math", "-s", "expert"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out  # math has no data: its step failed, and the command says so
    assert "failed:" in out and "embed_domain math" in out
    assert "where to look" in out and "MLflow UI" in out
    summary = json.loads((tmp_path / "reports" / "pipeline_summary.json").read_text())
    statuses = {(s["step"], s["domain"]): s["status"] for s in summary["steps"]}
    assert statuses[("embed_domain", "code")] == "completed" and statuses[("embed_domain", "math")] == "failed"
    bad = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "-p", "tiny", "-s", "nope"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 3 and "nope" in bad.stderr
