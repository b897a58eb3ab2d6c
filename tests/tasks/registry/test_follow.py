"""A revocation made in the MLflow UI / client (a status tag, an alias removed) reaches serving: `follow_revocations`
(the `follow_revocations` flow every minute, `flexo follow` every few seconds) marks the MoE versions holding it and
re-assembles without it. The time from the status change to a re-assembled `serving` is measured (target <= 60 s)."""

from __future__ import annotations

import os
import time

import pytest

from mlflow import MlflowClient
from tasks.core.tracking import tracking_uri
from tasks.registry import registry
from tasks.registry.consent import holdings
from tasks.registry.governance import FOLLOWER, audit_trail, follow_revocations
from tests.flows.conftest import flexo_in_process, tmp_params
from tests.tasks.registry_world import serving_world

POLL_S = 1.0  # `flexo follow --interval`: the test polls as the command does
TARGET_S = 60.0


@pytest.fixture
def served(tmp_profile):
    serving_world(tmp_profile, ["news", "math", "code"])
    uri = tracking_uri(tmp_profile)
    return tmp_profile, MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_a_status_tag_set_outside_flexo_reaches_serving_within_a_minute(served) -> None:
    profile, mlclient = served
    assert follow_revocations(profile)["new_moe"] == ""  # nothing withdrawn: nothing done
    changed = time.monotonic()
    mlclient.set_model_version_tag("flexo-expert-news", "1", "status", "revoked")  # what the MLflow UI does
    while not (done := follow_revocations(profile))["new_moe"]:
        assert time.monotonic() - changed < TARGET_S
        time.sleep(POLL_S)
    elapsed = time.monotonic() - changed
    print(f"\nstatus change in the registry -> re-assembled serving: {elapsed:.1f} s (poll every {POLL_S:.0f} s)")
    assert elapsed <= TARGET_S
    assert list(done["withdrawn"]) == ["news"] and done["revoked_dependencies"] == ["flexo-moe:1"]
    serving = registry.by_alias(profile, "flexo-moe", "serving")
    assert serving.label == done["new_moe"] == "flexo-moe version 2" and holdings(serving) == {"math": "1", "code": "1"}
    old = registry.get_version(profile, "flexo-moe", "1")
    assert old.status == "revoked_dependency" and old.aliases == ()
    trail = [(r.event, r.model, r.version, r.actor) for r in audit_trail(profile)]
    assert ("withdrawal_detected", "flexo-expert-news", "1", FOLLOWER) in trail
    assert trail[-1] == ("reassembled_after_revocation", "flexo-moe", "2", FOLLOWER)
    assert follow_revocations(profile)["new_moe"] == ""  # done once: a second look finds nothing


def test_flexo_follow_once_after_an_alias_is_removed(served, tmp_path, monkeypatch, capsys) -> None:
    profile, mlclient = served
    mlclient.delete_registered_model_alias("flexo-expert-code", "active")
    env = {
        **os.environ,
        "FLEXO_PARAMS": str(tmp_params(tmp_path)),
        "FLEXO_PROFILE": "tiny",
        "MLFLOW_TRACKING_URI": tracking_uri(profile),
        "COLUMNS": "1000",
    }
    # the CLI's entry point in this process (one pass, nothing a new interpreter would change)
    followed = flexo_in_process(monkeypatch, capsys, env, "follow", "--once")
    assert followed.returncode == 0, followed.stderr
    assert "withdrawn code" in followed.stderr and "serving now: flexo-moe version 2" in followed.stderr
    assert holdings(registry.by_alias(profile, "flexo-moe", "serving")) == {"news": "1", "math": "1"}
