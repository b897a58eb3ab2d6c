"""`flexo experts / revoke / audit / generate` through the real CLI on a real SQLite MLflow store in tmp_path.

`flexo revoke` runs as a real process; the other commands go through the same entry point in this process
(`flexo_in_process`), which spares four interpreters' imports of torch and MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tasks.core.tracking import tracking_uri
from tasks.registry import registry
from tests.flows.conftest import flexo_in_process
from tests.tasks.registry_world import build_world, make_expert, md5_of


def _env(profile) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri(profile),
        "FLEXO_PROFILE": "tiny",
        "MLFLOW_TRACKING_USERNAME": "steward-news",
    }


def _flexo(profile, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=_env(profile))


def test_steward_commands(tmp_profile, monkeypatch, capsys) -> None:
    def flexo(*args: str) -> subprocess.CompletedProcess[str]:
        return flexo_in_process(monkeypatch, capsys, _env(tmp_profile), *args)

    world = build_world(tmp_profile)
    registry.register_expert(
        tmp_profile, "news", make_expert(world, "news", 1), md5_of("news"), metrics={"val_loss": 2.5}
    )
    listed = flexo("experts", "--json")
    assert listed.returncode == 0, listed.stderr
    (news,) = json.loads(listed.stdout)
    assert (news["name"], news["version"], news["status"], news["aliases"]) == (
        "flexo-expert-news",
        "1",
        "active",
        ["active"],
    )
    revoked = _flexo(tmp_profile, "revoke", "news", "1", "--reason", "owner withdrew consent")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked by steward-news" in revoked.stderr
    again = flexo("revoke", "news", "1", "--reason", "twice")
    assert again.returncode == 3 and "already revoked" in again.stderr
    trail = json.loads(flexo("audit", "--json").stdout)
    assert [(r["event"], r["actor"]) for r in trail][-1] == ("revoked", "steward-news")
    refused = flexo("generate", "hello", "--experts", "news")
    assert refused.returncode == 6 and "flexo-expert-news version 1 was revoked by steward-news" in refused.stderr
