"""`flexo config`: print the resolved, validated profile (what a run would use)."""

from __future__ import annotations

import json

import typer

from flows.commands import ProfileOption, app, load


@app.command("config")
def show_config(
    profile: ProfileOption = None, as_json: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Validate params.yaml for a profile and print the resolved values (exit 3 names a bad key)."""
    resolved = load(profile)
    if as_json:
        typer.echo(json.dumps(resolved.model_dump(mode="json"), indent=2))
        return
    from rich import print_json

    print_json(data=resolved.model_dump(mode="json"))
