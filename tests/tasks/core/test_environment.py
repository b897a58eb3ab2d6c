"""One place sets the offline, telemetry-free environment, and every entry point goes through it."""

from __future__ import annotations

import os
import subprocess
import sys

from tasks.core.environment import FORCED, apply_offline_environment


def test_forced_flags_win_over_the_user(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    applied = apply_offline_environment()
    assert applied["HF_HUB_OFFLINE"] == "1" and os.environ["HF_HUB_OFFLINE"] == "1"
    for key in (
        "MLFLOW_DISABLE_TELEMETRY",
        "DVC_NO_ANALYTICS",
        "GX_ANALYTICS_ENABLED",
        "PREFECT_SERVER_ANALYTICS_ENABLED",
    ):
        assert key in applied


def test_cli_process_is_offline() -> None:
    env = {k: v for k, v in os.environ.items() if k not in FORCED}
    code = "import flows.cli, os; print(os.environ['HF_HUB_OFFLINE'], os.environ['DO_NOT_TRACK'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]
