"""`flexo train-public`, `flexo train-expert <domain>`, `flexo train-dense <domain>`.

Each resumes from its last checkpoint by default (a killed run continues where it stopped, with the same result);
`--fresh` starts over. Launch under `torchrun --nproc_per_node N -m flows.cli train-public` for DDP (gloo on CPU).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Annotated

import typer

from flows.commands import ProfileOption, app, console, load

FreshOption = Annotated[bool, typer.Option("--fresh", help="Ignore existing checkpoints and start from step 0.")]


def _report(outcome) -> None:
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 reports (and wrote the files)
    console.print(
        f"[bold green]done[/] {outcome.kind} {outcome.domain}: sha256 {outcome.sha256[:16]}…  "
        f"val_loss {outcome.metrics.get('val_loss', float('nan')):.4f}"
    )
    typer.echo(json.dumps(asdict(outcome), default=str, sort_keys=True))


@app.command("train-public")
def train_public_cmd(profile: ProfileOption = None, fresh: FreshOption = False) -> None:
    """Pretrain the public model M_pub on data/public (writes runs/<profile>/public/model)."""
    from tasks.training.train import train_public

    _report(train_public(load(profile), resume=not fresh))


@app.command("train-expert")
def train_expert_cmd(
    domain: Annotated[str, typer.Argument(help="The data owner's domain (e.g. math).")],
    profile: ProfileOption = None,
    fresh: FreshOption = False,
    dp: Annotated[
        bool | None, typer.Option("--dp/--no-dp", help="DP-SGD (Opacus); default: train_expert.dp.enabled.")
    ] = None,
) -> None:
    """Coordinated training of one expert against the frozen M_pub, reading only data/<domain>."""
    from tasks.training.train import train_expert

    _report(train_expert(load(profile), domain, resume=not fresh, dp=dp))


@app.command("train-dense")
def train_dense_cmd(
    domain: Annotated[str, typer.Argument(help="The domain to continue M_pub on (all parameters).")],
    profile: ProfileOption = None,
    fresh: FreshOption = False,
) -> None:
    """Dense domain model (baselines, extraction study): M_pub continued on data/<domain>."""
    from tasks.training.train import train_dense

    _report(train_dense(load(profile), domain, resume=not fresh))
