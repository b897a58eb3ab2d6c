"""The audit trail through the real CLI on a real SQLite MLflow store: it only grows (no command rewrites or drops a
record, and `flexo audit` only reads), a store written before the trail moved keeps its history, the trail is out of
the registered models' visible tags, and a record changed or removed outside flexo is named (exit 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest

import flows.cli  # noqa: F401  (registers every command on the app)
from flows.commands import app
from tasks.core.tracking import tracking_uri
from tasks.registry import audit, registry
from tasks.registry.governance import audit_trail
from tasks.registry.store import client
from tests.flows.conftest import flexo_in_process
from tests.tasks.registry_world import build_world, make_expert, md5_of

NEWS = "flexo-expert-news"
LEGACY_KEY = "audit.00000000000000000001.registered"
LEGACY = {"at": "2026-01-01T00:00:00+00:00", "event": "registered", "model": NEWS, "version": "0", "actor": "old"}


def _env(profile) -> dict[str, str]:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri(profile),
        "FLEXO_PROFILE": "tiny",
        "MLFLOW_TRACKING_USERNAME": "steward-news",
        "COLUMNS": "200",
    }


def _flexo_process(profile, *args: str) -> subprocess.CompletedProcess[str]:
    """`flexo <args>` in a new interpreter, as a steward runs it."""
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=_env(profile))


@pytest.fixture
def flexo(tmp_profile, monkeypatch, capsys) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`flexo <args>` through the command line's entry point in this process (`flexo_in_process`: the same parsing,
    command, messages and exit codes, without a new interpreter's seconds of imports per call)."""
    return lambda *args: flexo_in_process(monkeypatch, capsys, _env(tmp_profile), *args)


def _trail(profile) -> list[dict]:
    """The trail as `flexo audit --json` prints it, read in-process (the CLI's own reading is checked once)."""
    return [dict(r.__dict__) for r in audit_trail(profile)]


def test_the_cli_only_appends_and_keeps_the_history_of_an_older_store(tmp_profile, flexo) -> None:
    world = build_world(tmp_profile)
    mlclient = client(tmp_profile)
    mlclient.create_registered_model(NEWS)  # a store from before: its trail in `audit.` tags
    mlclient.set_registered_model_tag(NEWS, LEGACY_KEY, json.dumps(LEGACY))
    registry.register_expert(tmp_profile, "news", make_expert(world, "news", 1), md5_of("news"))
    registry.register_expert(tmp_profile, "math", make_expert(world, "math", 1), md5_of("math"))

    trail = _trail(tmp_profile)
    assert trail[0] == {**LEGACY, "detail": {}}  # the old history, first
    assert [(r["event"], r["model"]) for r in trail[1:3]] == [("registered", NEWS), ("alias_set", NEWS)]
    for args in (
        ("revoke", "news", "1", "--reason", "owner withdrew consent"),
        ("revoke", "news", "1", "--reason", "again"),  # refused: nothing rewritten
        ("follow", "--once"),
        ("experts", "--json"),
    ):
        flexo(*args)
        after = _trail(tmp_profile)
        assert after[: len(trail)] == trail, args  # every earlier record unchanged and in place
        trail = after
    assert [(r["event"], r["actor"]) for r in trail if r["model"] == NEWS][-1] == ("revoked", "steward-news")
    assert audit.verify(mlclient) == []
    shown = _flexo_process(tmp_profile, "audit", "--json")  # the printed trail, from a process of its own
    assert shown.returncode == 0 and json.loads(shown.stdout) == trail, shown.stderr
    # `flexo audit` has no option that writes: only the profile and the output format
    (command,) = [c for c in app.registered_commands if c.name == "audit"]
    assert set(command.callback.__annotations__) - {"return"} == {"profile", "as_json"}
    # out of the registry list: no visible tag of any model holds the trail (the MLflow UI hides `mlflow.` tags)
    for model in mlclient.search_registered_models():
        visible = {key for key in model.tags if "audit" in key and not key.startswith("mlflow.")}
        assert visible == ({LEGACY_KEY} if model.name == NEWS else set()), model.name  # only the old store's own


def test_a_record_changed_or_removed_outside_flexo_is_named(tmp_profile, flexo) -> None:
    world = build_world(tmp_profile)
    registry.register_expert(tmp_profile, "news", make_expert(world, "news", 1), md5_of("news"))
    registry.register_expert(tmp_profile, "news", make_expert(world, "news", 2), md5_of("news-2"))
    mlclient = client(tmp_profile)
    keys = sorted(k for k in mlclient.get_registered_model(NEWS).tags if k.startswith(audit.AUDIT_PREFIX))
    assert len(keys) == 4 and flexo("audit").returncode == 0

    edited = json.loads(mlclient.get_registered_model(NEWS).tags[keys[1]])
    mlclient.set_registered_model_tag(NEWS, keys[1], json.dumps({**edited, "actor": "someone else"}))
    shown = flexo("audit")
    assert shown.returncode == 5 and NEWS in shown.stderr and "outside flexo" in shown.stderr

    mlclient.set_registered_model_tag(NEWS, keys[1], json.dumps(edited, sort_keys=True))  # restored exactly
    assert flexo("audit").returncode == 0
    mlclient.delete_registered_model_tag(NEWS, keys[2])
    assert flexo("audit", "--json").returncode == 5
