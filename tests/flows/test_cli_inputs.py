"""Bad command-line input is a one-line error with its documented exit code (2 usage, 3 invalid value), never a
traceback; and every `flexo <command>` a message tells the user to run exists."""

from __future__ import annotations

import re
import sys

import pytest

from flows.cli import main
from flows.commands import app
from tasks.core.config import REPO_ROOT
from tests.flows.conftest import tmp_params

BAD = [
    (["generate", ""], 3, "prompt is empty"),
    (["generate", "   "], 3, "prompt is empty"),
    (["generate", "hi", "--max-new-tokens", "-3"], 3, "max_new_tokens must be a whole number of at least 1"),
    (["generate", "hi", "--max-new-tokens", "0"], 3, "max_new_tokens must be a whole number of at least 1"),
    (["generate", "hi", "--max-new-tokens", "many"], 2, "--max-new-tokens"),
    (["generate", "hi", "--experts", ""], 3, "--experts names no expert"),
    (["generate", "hi", "--exclude", " , "], 3, "--exclude names no expert"),
    (["generate", "hi", "--experts", "astrology"], 3, "['astrology'] are not configured domains"),
    (["generate", "hi", "--exclude", "public"], 3, "public expert cannot be excluded"),
    (["generate", "hi", "--experts", "news", "--exclude", "math"], 3, "not both"),
    (["generate", "hi", "--version", "abc"], 3, "flexo-moe version abc does not exist"),
    (["generate", "hi"], 3, "no `serving` version; run the pipeline (`flexo run`) first"),
    (["serve", "--port", "0"], 3, "--port 0 is not a TCP port"),
    (["serve", "--port", "70000"], 3, "--port 70000 is not a TCP port"),
    (["worker", "--owner", "nobody"], 3, "--owner 'nobody' is neither"),
    (["worker", "--owner", "code", "--limit", "0"], 3, "--limit 0"),
    (["revoke", "news", "1", "--reason", "  "], 3, "--reason is required"),
    (["revoke", "news", "abc", "--reason", "x"], 3, "flexo-expert-news version abc does not exist"),
    (["revoke", "astrology", "1", "--reason", "x"], 3, "does not exist"),
]


@pytest.fixture(scope="module")
def isolated_params(tmp_path_factory) -> str:
    """The tiny profile's params with every path under one folder for the module: the MLflow store the first command
    creates (seconds of schema migration) is the one the others find, as a user's second command does."""
    return str(tmp_params(tmp_path_factory.mktemp("cli-inputs")))


@pytest.fixture
def isolated(isolated_params, monkeypatch):
    """Every path of the tiny profile under a temporary folder (a store a command creates lands there, not in the
    repo)."""
    monkeypatch.setenv("FLEXO_PARAMS", isolated_params)
    monkeypatch.setenv("FLEXO_PROFILE", "tiny")
    monkeypatch.setenv("COLUMNS", "1000")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)


@pytest.mark.parametrize(("args", "code", "message"), BAD, ids=[" ".join(a) or "empty" for a, _, _ in BAD])
def test_bad_input_is_a_clear_error(isolated, monkeypatch, capsys, args, code, message) -> None:
    monkeypatch.setattr(sys, "argv", ["flexo", *args])
    with pytest.raises(SystemExit) as exited:
        main()  # an exception other than SystemExit (a traceback for the user) fails the test
    err = capsys.readouterr().err
    assert exited.value.code == code, err
    assert message in " ".join(err.split()), err
    assert "Traceback" not in err


def test_every_command_a_message_names_exists() -> None:
    commands = {info.name for info in app.registered_commands}
    named: dict[str, set[str]] = {}
    for package in ("tasks", "flows", "model"):
        for source in (REPO_ROOT / package).rglob("*.py"):
            for command in re.findall(r"`flexo ([a-z][a-z-]*)", source.read_text()):
                named.setdefault(command, set()).add(str(source.relative_to(REPO_ROOT)))
    unknown = {command: sorted(files) for command, files in named.items() if command not in commands}
    assert not unknown, f"messages name commands that do not exist: {unknown}"
