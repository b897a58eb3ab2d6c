"""`flexo ablate`: the paper's router ablations (tasks.training.ablations), scored afterwards by `flexo eval`."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.commands import ProfileOption, app, console, load


@app.command("ablate")
def ablate_command(
    profile: ProfileOption = None,
    variants: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            "-v",
            help="no_bias, random_router or public_router (repeatable; default: ablation.variants in params.yaml).",
        ),
    ] = None,
) -> None:
    """Retrain the experts of ablation.domains without the bias, with random router rows, or with rows from M_pub's own
    hidden states, and merge each variant into its own MoE under runs/<profile>/ablations/. Run `flexo eval` next."""
    from tasks.core.errors import ConfigError
    from tasks.training.ablations import LABELS, run_ablations

    p = load(profile)
    chosen = variants or p.ablation.variants
    if not chosen:
        raise ConfigError("no ablation variant chosen: pass --variant or set ablation.variants in params.yaml")
    unknown = sorted(set(chosen) - set(LABELS))
    if unknown:
        raise ConfigError(f"unknown ablation variant(s) {unknown}; choose from {list(LABELS)}")
    for variant, moe in run_ablations(p, chosen).items():
        console.print(
            f"[green]{variant}[/]: {moe['model_dir']} (experts {', '.join(moe['experts'])}, top-k {moe['top_k']})",
            highlight=False,
        )
    if set(chosen) - set(p.ablation.variants):
        console.print(
            "[yellow]note:[/] `flexo eval` scores only the variants listed in ablation.variants", highlight=False
        )
