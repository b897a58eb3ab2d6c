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
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def main() -> None:
    """Run the CLI; a FlexoError becomes a one-screen message and its exit code, not a traceback."""
    _exit_on_sigterm()
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
