"""`flexo data` on the command line: bad options exit with the configuration code and name the problem."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tasks.core.config import REPO_ROOT
from tests.flows.conftest import flexo_in_process


@pytest.fixture
def flexo(monkeypatch, capsys) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`flexo <args>` (with `env`, default this process's) through the command line's entry point in this process
    (`flexo_in_process`: the same parsing, messages and exit codes, without a new interpreter's imports per call)."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return flexo_in_process(monkeypatch, capsys, dict(os.environ) if env is None else env, *args)

    return run


def test_unknown_domain_and_stage_exit_3_naming_them(flexo):
    bad_domain = flexo("data", "-p", "tiny", "--domain", "nope")
    assert bad_domain.returncode == 3 and "unknown domain(s) ['nope']" in bad_domain.stderr
    bad_stage = flexo("data", "-p", "demo", "--stage", "nope")
    assert bad_stage.returncode == 3 and "not one of" in bad_stage.stderr


def test_dvc_stage_refuses_a_profile_dvc_lock_cannot_see(flexo):
    run = flexo("data", "-p", "tiny", "--stage", "ingest", "--domain", "news")
    assert run.returncode == 3 and "`profile:`" in run.stderr.replace("\n", " ")


def test_stale_data_cards_stop_training_commands_but_not_the_data_rebuild(tmp_path: Path, flexo) -> None:
    """The sizing check reads the data cards; the command that rewrites them must still load the profile."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    tiny = raw["profiles"]["tiny"]
    tiny.setdefault("paths", {})["reports_dir"] = str(tmp_path / "reports")
    tiny["train_public"]["max_epochs"] = 4
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    cards = tmp_path / "reports" / "data" / "cards"
    cards.mkdir(parents=True)
    (cards / "public.json").write_text(json.dumps({"domain": "public", "tokens": {"train": 4000}}))  # 4.1 passes
    env = {**os.environ, "FLEXO_PARAMS": str(params)}
    training = flexo("train-public", "-p", "tiny", env=env)
    assert training.returncode == 3 and "4.10 passes" in training.stderr.replace("\n", " ")
    rebuild = flexo("data", "-p", "tiny", "--domain", "nope", env=env)  # loads the profile, then refuses the domain
    assert rebuild.returncode == 3 and "unknown domain(s) ['nope']" in rebuild.stderr
