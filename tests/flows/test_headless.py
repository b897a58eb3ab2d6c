"""The model stages without the orchestration (`flows.headless`), as a lent GPU machine runs them: real training,
assembly and evaluation on the tiny profile, in a process that must never import Prefect, MLflow, DVC or GX (the device
image has none of them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from flows.headless import run_stages
from tasks.core.config import DEFAULT_PARAMS, REPO_ROOT, load_profile
from tasks.core.errors import ConfigError, DataError
from tasks.training.assemble import MANIFEST
from tests.tasks.eval_world import write_domain, write_tokenizer

DOMAINS = ("public", "code", "math")
ORCHESTRATION = ("prefect", "mlflow", "dvc", "great_expectations")


@pytest.fixture
def params_file(tmp_path):
    """params.yaml with every path under tmp_path and three domains (public and two owners)."""
    raw = yaml.safe_load(DEFAULT_PARAMS.read_text())
    raw["defaults"]["paths"].update(
        data_dir=str(tmp_path / "data"),
        runs_dir=str(tmp_path / "runs"),
        reports_dir=str(tmp_path / "reports"),
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    raw["domains"] = {d: raw["domains"][d] for d in DOMAINS}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    profile = load_profile("tiny", path)
    rng = np.random.default_rng(0)
    for domain in DOMAINS:
        write_domain(profile, domain, rng, rows=60)
    write_tokenizer(profile)
    return path


def test_every_stage_runs_without_the_orchestration_libraries(params_file, tmp_path):
    summary_path = tmp_path / "headless.json"
    script = (  # an import hook records who imports an orchestration library, so a failure names the importer
        "import sys, traceback\n"
        "class Watch:\n"
        "    seen = {}\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {ORCHESTRATION!r} and name not in self.seen:\n"
        "            self.seen[name] = ''.join(traceback.format_stack(limit=25))\n"
        "        return None\n"
        "watch = Watch()\n"
        "sys.meta_path.insert(0, watch)\n"
        "from flows.headless import STAGES, main\n"
        f"main(['--params', {str(params_file)!r}, '--profile', 'tiny', '--summary', {str(summary_path)!r}, "
        "'--stages', *STAGES])\n"
        f"loaded = [m for m in {ORCHESTRATION!r} if m in sys.modules]\n"
        "assert not loaded, f'imported {loaded}: ' + next(iter(watch.seen.values()), '')\n"
    )
    # a registry configured but unreachable: the headless path must neither read nor need it
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    summary = json.loads(summary_path.read_text())
    assert list(summary["seconds"]) == ["embed", "public", "expert", "dense", "assemble", "evaluate", "total"]
    assert "failed" not in summary
    experts = summary["stages"]["expert"]
    assembled = summary["stages"]["assemble"]
    assert assembled["experts"] == ["public", "code", "math"]
    manifest = json.loads((tmp_path / "runs" / "tiny" / "moe" / MANIFEST).read_text())
    assert manifest["expert_sha256"] == [experts["code"]["sha256"], experts["math"]["sha256"]]
    assert all(0 < experts[d]["epochs"] for d in ("code", "math")) and summary["stages"]["public"]["epochs"] > 0
    report = (tmp_path / "reports" / "flexmix-tiny.md").read_text()
    assert "FlexOlmo" in report and "code_bpb" in report and "math_em" in report
    results = json.loads((tmp_path / "runs" / "tiny" / "eval" / "results.json").read_text())
    assert results  # the evaluation's numbers, as `flexo eval` writes them


def test_a_stage_whose_input_is_missing_fails_with_the_summary_written(params_file, tmp_path):
    profile = load_profile("tiny", params_file)
    summary_path = tmp_path / "cut.json"
    with pytest.raises(DataError, match="expert 'code' has not been trained"):
        run_stages(profile, ["assemble"], summary_path=summary_path)
    summary = json.loads(summary_path.read_text())
    assert summary["failed"]["stage"] == "assemble" and "has not been trained" in summary["failed"]["error"]
    with pytest.raises(ConfigError, match="unknown stage"):
        run_stages(profile, ["deploy"])
