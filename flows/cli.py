"""Entry point of the `flexo` command line: imports every command module and maps errors to exit codes."""

from __future__ import annotations

import importlib
import pkgutil
import signal
import sys

import flows  # noqa: F401  (offline environment first)
import flows.commands as commands
from flows.commands import app, console
from tasks.core.errors import FlexoError


def _register_commands() -> None:
    for module in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{module.name}")


_register_commands()


def _exit_on_sigterm() -> None:
    """SIGTERM (systemd, Kubernetes, `timeout`, a test) ends a command as Ctrl-C does, through the exit handlers: the
    temporary Prefect server a command started stops with it instead of outliving it (Python's default SIGTERM
    handling skips them)."""
    signal.signal(signal.SIGTERM, _terminate)


def _terminate(signum: int, _frame: object) -> None:
    """Only a flag and SystemExit: a signal handler that imports or locks can deadlock against the code it
    interrupted. (Prefect's own handler replaces this one while a flow runs and passes the signal back at its end.)"""
    _terminated_by.append(signum)
    sys.exit(128 + signum)


_terminated_by: list[int] = []  # the signal that ended the command, whatever the flow engine turned it into


def main() -> None:
    """Run the CLI. A command ended by SIGTERM exits 128 + 15 even where Prefect's engine reported the interruption
    as a crash (exit 1), so service managers and scripts see the signal, not a failure."""
    _exit_on_sigterm()
    try:
        _main()
    finally:
        if _terminated_by:
            sys.exit(128 + _terminated_by[0])


def _main() -> None:
    """Run the CLI; a FlexoError becomes a one-screen message and its exit code, not a traceback."""
    try:
        code = app(standalone_mode=False)  # without standalone mode, `typer.Exit(n)` comes back as n, not as sys.exit
    except FlexoError as err:
        console.print(f"[bold red]error:[/] {err}", markup=True, highlight=False)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as err:  # usage errors come through here in non-standalone mode (typer vendors click)
        if hasattr(err, "show") and hasattr(err, "exit_code"):
            err.show()
            sys.exit(err.exit_code)
        if type(err).__name__ == "Abort":
            sys.exit(1)
        raise
    if isinstance(code, int) and not isinstance(code, bool) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
