"""One place sets the offline, telemetry-free environment, and every entry point goes through it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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


_SHAPES = """
import tasks  # applies the environment before the first matmul
import torch
weight = torch.randn(64, 32)
with torch.autocast("cpu", dtype=torch.bfloat16):
    for rows in [8, *range(9, 50), 8]:  # 41 other shapes between the two of 8 rows
        torch.nn.functional.linear(torch.randn(rows, 32), weight)
"""


def _last_kernel_lookup(capacity: str | None) -> str:
    """oneDNN's verdict (cache_hit / cache_miss) on the last matmul of `_SHAPES`, run in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    env["ONEDNN_VERBOSE"] = "profile_create"
    if capacity is not None:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = capacity
    out = subprocess.run([sys.executable, "-c", _SHAPES], env=env, capture_output=True, text=True, check=True)
    lookups = [line for line in out.stdout.splitlines() if ",create:cache_" in line and ",8x32:" in line]
    if not lookups:
        pytest.skip("this CPU's bf16 matmuls do not go through oneDNN: its kernel cache is not used")
    return lookups[-1].split(",create:")[1].split(",")[0]


def test_onednn_keeps_a_bounded_kernel_cache_unless_the_user_sets_one() -> None:
    """The default cache (32 kernels) has evicted the first shape after 41 others; a user's own capacity wins."""
    assert _last_kernel_lookup(None) == "cache_miss"
    assert _last_kernel_lookup("1024") == "cache_hit"
