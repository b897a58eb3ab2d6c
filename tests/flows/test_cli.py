"""The `flexo` command line: help on every command, exit codes that mean something."""

from __future__ import annotations

import subprocess
import sys

from flows.cli import app


def _flexo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True)


def test_every_command_has_help() -> None:
    import typer.main

    group = typer.main.get_command(app)
    assert group.commands, "no commands registered"
    for name, command in group.commands.items():
        assert command.help, f"`flexo {name}` has no help text"
        result = _flexo(name, "--help")
        assert result.returncode == 0, (name, result.stderr)


def test_bad_profile_exits_with_config_code() -> None:
    result = _flexo("config", "--profile", "nope")
    assert result.returncode == 3
    assert "profile 'nope' is not defined" in result.stderr


def test_unknown_command_is_usage_error() -> None:
    assert _flexo("no-such-command").returncode == 2


def test_a_command_exit_code_reaches_the_shell(monkeypatch) -> None:
    """`raise typer.Exit(n)` in a command (how `flexo run` reports a failed step) must become the process's exit
    code."""
    import pytest
    import typer

    from flows import cli

    @app.command("exit-probe", hidden=True)
    def _probe() -> None:
        """Exit with 7."""
        raise typer.Exit(7)

    try:
        monkeypatch.setattr(sys, "argv", ["flexo", "exit-probe"])
        with pytest.raises(SystemExit) as stopped:
            cli.main()
        assert stopped.value.code == 7
    finally:
        app.registered_commands[:] = [c for c in app.registered_commands if c.name != "exit-probe"]
