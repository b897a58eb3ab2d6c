"""benchmarks/router_tuning.py on a tiny world, as a user runs it: the untuned MoE and its router-tuned copies (proxy
sets and public text alone) scored on the same requests, with paired differences and router mass per domain."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.flows.conftest import tmp_params
from tests.profiles import profile_under
from tests.tasks.eval_world import build_world


@pytest.mark.slow  # a tiny world and three scoring passes in a fresh interpreter (about a minute on 2 cores)
def test_router_tuning_benchmark_on_a_tiny_world(tmp_path, tiny_profile):
    profile = profile_under(tiny_profile, tmp_path)
    build_world(profile)
    params = tmp_params(tmp_path)  # the same paths, for the script's own process
    out = tmp_path / "rt.json"
    command = [sys.executable, "benchmarks/router_tuning.py", "--profile", "tiny", "--steps", "3", "--kinds", "bpb"]
    env = {**os.environ, "FLEXO_PARAMS": str(params), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert list(result["models"]) == ["FlexOlmo", "RT on proxy", "RT on public"]
    assert (
        result["rt"]["proxy"]["proxy_sets"] == len(profile.closed_domains) and result["rt"]["public"]["proxy_sets"] == 0
    )
    served, tuned = result["models"]["FlexOlmo"]["bpb"], result["models"]["RT on proxy"]["bpb"]
    assert tuned["average"]["minus_served"] == pytest.approx(
        tuned["average"]["value"] - served["average"]["value"], abs=2e-4
    )
    assert tuned["average"]["value"] != served["average"]["value"]  # tuning moved the router
    masses = result["models"]["RT on proxy"]["router_mass"]
    assert all(0 < masses[d]["own"] < 1 for d in profile.closed_domains) and masses["public"]["own"] is None
    assert "minus served" in done.stdout and "own mass" in done.stdout
