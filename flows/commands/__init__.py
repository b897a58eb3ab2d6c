"""The `flexo` Typer app and what every command shares.

Each area registers its commands in its own module (`flows/commands/<area>.py`) with `@app.command()`;
`flows/cli.py` imports them all. Slow libraries are imported inside the command that needs them, so `flexo --help`
stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from tasks.core.errors import EXIT_CODES

_epilog = "Exit codes: " + "; ".join(f"{code} = {meaning}" for code, meaning in EXIT_CODES.items())

app = typer.Typer(
    name="flexo",
    help="flexo: FlexOlmo as an MLOps pipeline (Prefect, DVC, MLflow, Great Expectations).",
    epilog=_epilog,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """flexo: FlexOlmo as an MLOps pipeline. Run `flexo COMMAND --help` for any command."""


ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile", "-p", help="Profile in params.yaml: tiny, demo, small or gpu (default: params.yaml's `profile`)."
    ),
]


def load(profile: str | None, check_data: bool = True):
    """The validated profile (a bad value raises ConfigError naming the key). `check_data=False` for the commands that
    (re)build the data: the budgets are checked against the data cards they are about to rewrite, so stale cards must
    not stop them."""
    from tasks.core.config import load_profile

    return load_profile(profile, check_data=check_data)
