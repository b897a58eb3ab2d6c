"""One place sets the offline, telemetry-free environment, and every entry point goes through it."""

from __future__ import annotations

import os
import subprocess
import sys

from tasks.core.environment import FORCED, HUB_OPT_IN, apply_offline_environment


def test_forced_flags_win_over_the_user(monkeypatch) -> None:
    monkeypatch.delenv(HUB_OPT_IN, raising=False)
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


def test_only_an_explicit_opt_in_lets_the_user_turn_the_hub_on(monkeypatch) -> None:
    """`FLEXO_ALLOW_HUB=1` (lm-eval's standard tasks download their data): the user's hub flags win, and unset ones
    still default to offline; any other value forces them as before."""
    monkeypatch.setenv(HUB_OPT_IN, "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    applied = apply_offline_environment()
    assert applied["HF_DATASETS_OFFLINE"] == "0" and applied["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv(HUB_OPT_IN, "yes")
    assert apply_offline_environment()["HF_DATASETS_OFFLINE"] == "1"
