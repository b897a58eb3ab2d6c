"""`flexo run` (the main job), `flexo deploy` (deployments, work pools, the `gpu` limit), `flexo worker --owner`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Annotated

import typer

from flows.commands import ProfileOption, app, console, load
from tasks.core.errors import ConfigError, FlexoError, IntegrityError, RevokedError

# a step refused for these reasons makes `flexo run` exit with their code, not 1: scripts must tell a tampered file or a
# revoked expert from a crash (integrity first when both happened)
REFUSALS = (IntegrityError, RevokedError)
STATUS_STYLE = {"completed": "green", "cached": "cyan", "skipped": "yellow", "failed": "bold red", "running": "dim"}


class StageDisplay:
    """Progress per stage on the console: a rule when a stage starts, one line per step as it ends."""

    def __init__(self) -> None:
        self.started: dict[tuple, float] = {}

    def __call__(self, stage: str, step: str, domain: str | None, status: str) -> None:
        key = (stage, step, domain)
        if status == "stage-start":  # a stage's own key: its steps' keys can coincide with (stage, stage, None)
            console.rule(f"[bold]{stage}")
            self.started[("stage", stage)] = time.perf_counter()
        elif status == "stage-end":
            begun = self.started.pop(("stage", stage), time.perf_counter())
            console.print(f"[dim]{stage} done in {time.perf_counter() - begun:.1f}s[/]")
        elif status == "running":
            self.started[key] = time.perf_counter()
            console.print(f"  [dim]… {step} {domain or ''}[/]", highlight=False)
        else:
            seconds = time.perf_counter() - self.started.pop(key, time.perf_counter())
            style = STATUS_STYLE.get(status, "")
            console.print(f"  [{style}]{status:9}[/] {step} {domain or ''} [dim]{seconds:.1f}s[/]", highlight=False)


def _print_summary(summary: dict) -> None:
    from rich.table import Table

    table = Table(title=f"pipeline ({summary['profile']}): {summary['seconds']:.0f}s", show_lines=False)
    for column in ("stage", "step", "domain", "status", "seconds", "detail"):
        table.add_column(column, overflow="fold")
    for row in summary["steps"]:
        style = STATUS_STYLE.get(row["status"], "")
        table.add_row(
            row["stage"],
            row["step"],
            row["domain"] or "",
            f"[{style}]{row['status']}[/]",
            f"{row['seconds']:.1f}",
            row["detail"][:160],
        )
    console.print(table)
    if summary["reused"]:
        console.print(f"[cyan]reused (cache hits):[/] {', '.join(summary['reused'])}", highlight=False)
    for item in summary["failed"]:
        console.print(f"[bold red]failed:[/] {item['step']} {item['domain'] or ''}: {item['why']}", highlight=False)
    console.rule("[bold]where to look")
    for name, where in summary["links"].items():
        console.print(f"  {name}: {where}", highlight=False)


@app.command("run")
def run_command(
    profile: ProfileOption = None,
    domains: Annotated[
        list[str] | None, typer.Option("--domain", "-d", help="Only these owners' domains (repeatable).")
    ] = None,
    stages: Annotated[
        list[str] | None,
        typer.Option(
            "--stage",
            "-s",
            help="Only these stages (repeatable): data, public, expert, assemble, ablate, evaluate, attack. "
            "Default: all but ablate.",
        ),
    ] = None,
    ablations: Annotated[
        bool,
        typer.Option(
            "--ablations/--no-ablations",
            help="Also run the router ablations (paper Tables 1 and 3; about 2 more minutes on demo): the report "
            "then has their section.",
        ),
    ] = False,
) -> None:
    """The main job: the whole pipeline (data → public → experts → assemble → evaluate → attack) as Prefect flows;
    `--ablations` adds the router ablations before the evaluation.

    Runs on an ephemeral local Prefect server unless PREFECT_API_URL is set; an unchanged rerun reuses cached steps.
    Exit 1 when any step failed (the summary says which and why); 5 when one was refused because a stored file
    changed, 6 because an expert was revoked.
    """
    p = load(profile)
    from flows.pipeline import STAGES

    bad = sorted(set(stages or []) - set(STAGES)) + sorted(set(domains or []) - set(p.closed_domains))
    if bad:
        raise ConfigError(f"unknown stage(s)/domain(s) {bad}; stages: {list(STAGES)}; domains: {p.closed_domains}")
    from flows.outcomes import add_listener
    from flows.pipeline import pipeline
    from flows.prefect_server import prefect_api

    console.print(
        f"[bold]flexo run[/] profile [bold]{p.name}[/]: Prefect API "
        f"{os.environ.get('PREFECT_API_URL') or 'ephemeral (PREFECT_HOME=' + os.environ['PREFECT_HOME'] + ')'}"
    )
    remove = add_listener(StageDisplay())
    try:
        with prefect_api(p.orchestration.server_startup_timeout_s):
            summary = pipeline(profile=p, domains=domains or None, stages=stages or None, ablations=ablations)
    finally:
        remove()
    _print_summary(summary)
    if summary["failed"]:
        raise typer.Exit(exit_code(summary["failed"]))


def exit_code(failed: list[dict]) -> int:
    """The exit code of a run whose steps `failed` (each with its `why`, "<error class>: <message>"): 5 when a step
    was refused for integrity, else 6 when refused for a revocation, else 1."""
    for refusal in REFUSALS:
        if any(str(item["why"]).startswith(f"{refusal.__name__}:") for item in failed):
            return refusal.exit_code
    return 1


def _api_url(p, api_url: str | None) -> str:
    url = api_url or os.environ.get("PREFECT_API_URL") or f"http://127.0.0.1:{p.registry.prefect_ui_port}/api"
    import httpx

    try:
        httpx.get(f"{url}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"no Prefect server answers at {url} ({exc}); start one (`prefect server start`, or `flexo ui`) "
            "or pass --api-url / set PREFECT_API_URL"
        ) from exc
    return url


@app.command("deploy")
def deploy_command(
    profile: ProfileOption = None,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            help="Prefect API (default: PREFECT_API_URL, else the local server on registry.prefect_ui_port).",
        ),
    ] = None,
    gpu_pools: Annotated[
        bool, typer.Option("--gpu-pools", help="Also create the Docker and Kubernetes GPU work pools.")
    ] = False,
    names: Annotated[
        list[str] | None,
        typer.Option("--name", "-n", help="Only these deployments (flow/name, e.g. expert/weekly-math); default all."),
    ] = None,
) -> None:
    """Register prefect.yaml's deployments (nightly validation, weekly retraining per owner, on-demand assemble/revoke):
    checks the GPU job templates with Prefect's validation, creates the work pools and the `gpu` concurrency limit."""
    from flows import work_pools
    from flows.placement import GPU_TAG, ensure_gpu_limit
    from tasks.core.config import REPO_ROOT

    p = load(profile)
    url = _api_url(p, api_url)
    os.environ["PREFECT_API_URL"] = url
    checked = work_pools.check_gpu_templates()
    console.print(f"GPU job templates valid: {', '.join(f'{k} requests {n} GPU' for k, n in checked.items())}")
    created = work_pools.create_pools(work_pools.pools(p, gpu=gpu_pools))
    console.print(f"work pools: {', '.join(created)}")
    ensure_gpu_limit(p.orchestration.gpu_slots)
    console.print(f"concurrency limit: tag `{GPU_TAG}` = {p.orchestration.gpu_slots}")
    selection = [arg for n in names for arg in ("--name", n)] if names else ["--all"]
    env = {**os.environ, "FLEXO_REPO": str(REPO_ROOT), "PREFECT_API_URL": url}
    cmd = [
        sys.executable,
        "-m",
        "prefect",
        "--no-prompt",
        "deploy",
        *selection,
        "--prefect-file",
        str(REPO_ROOT / "prefect.yaml"),
    ]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise FlexoError(
            f"`prefect deploy` failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}"
        )
    console.print(
        f"deployments registered on {url}; start workers with `flexo worker --owner <domain>` "
        "and `flexo worker --owner shared`"
    )


@app.command("worker")
def worker_command(
    owner: Annotated[str, typer.Option("--owner", "-o", help="A data owner's domain (or owner name), or `shared`.")],
    profile: ProfileOption = None,
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="Prefect API (default: PREFECT_API_URL, else the local server).")
    ] = None,
    run_once: Annotated[
        bool, typer.Option("--run-once", help="Run the scheduled flow runs due now, then exit.")
    ] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Most flow runs at once on this worker.")] = None,
) -> None:
    """Start a process worker on one owner's own work pool: it runs only that owner's flows (and refuses others).
    The command becomes the Prefect worker (exec): a signal to it (Ctrl-C, SIGTERM from systemd or Kubernetes)
    reaches the worker itself, and nothing is left running after it."""
    from flows import work_pools
    from flows.placement import OWNER_ENV
    from tasks.core.config import REPO_ROOT

    p = load(profile)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: a worker runs at least one flow run at a time")
    if owner != work_pools.SHARED:
        work_pools.owner_of(p, owner)  # an unknown owner is named before the server is asked
    url = _api_url(p, api_url)
    env = {**os.environ, "FLEXO_REPO": str(REPO_ROOT), "PREFECT_API_URL": url}
    if owner == work_pools.SHARED:
        pool = work_pools.pool_name(p, work_pools.SHARED)
        env.pop(OWNER_ENV, None)
    else:
        domain, who = work_pools.owner_of(p, owner)
        pool = work_pools.pool_name(p, who)
        env[OWNER_ENV] = domain
    cmd = [
        sys.executable,
        "-m",
        "prefect",
        "worker",
        "start",
        "--pool",
        pool,
        "--type",
        "process",
        "--name",
        f"{pool}-{os.uname().nodename}",
    ]
    if run_once:
        cmd.append("--run-once")
    if limit:
        cmd += ["--limit", str(limit)]
    console.print(f"worker on pool [bold]{pool}[/] ({url}); Ctrl-C stops it", highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(REPO_ROOT)
    os.execvpe(cmd[0], cmd, env)
