"""Registry, governance and serving commands: `flexo experts`, `revoke`, `follow`, `audit`, `ui`, `generate`, `serve`.

Thin: each command calls `tasks.registry.registry` / `tasks.registry.governance` / `tasks.registry.serving` and
prints. MLflow, torch and Prefect are imported inside the commands so `flexo --help` stays fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from flows.commands import ProfileOption, app, console, load
from tasks.core.config import Profile
from tasks.core.errors import ConfigError

TABLE_WIDTH = 160  # registry tables hold hashes and names: wider than an 80-column pipe default
STOP_GRACE_S = 15  # seconds a UI server gets to shut down before it is killed
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _split(value: str | None, option: str) -> list[str] | None:
    """A comma-separated option as a list; None when not given, ConfigError when given but naming nothing."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise ConfigError(f"{option} names no expert; give comma-separated domains or leave the option out")
    return names


@app.command("experts")
def experts_command(profile: ProfileOption = None, as_json: JsonOption = False) -> None:
    """Every expert's versions with status, owner, aliases, sha256, data hash and metrics; then the MoE versions."""
    from rich.table import Table

    from tasks.registry import registry

    resolved = load(profile)
    names = [registry.expert_model_name(resolved, d) for d in resolved.closed_domains]
    names += [resolved.registry.public_model, resolved.registry.moe_model]
    rows = [ref for name in names for ref in registry.versions_if_any(resolved, name)]
    if as_json:
        typer.echo(json.dumps([{**ref.__dict__, "aliases": list(ref.aliases)} for ref in rows], indent=2, default=str))
        return
    table = Table(title=f"registered models ({registry.tracking_uri(resolved)})")
    for column in ("model", "version", "status", "owner", "aliases", "sha256", "data_md5", "metrics / experts"):
        table.add_column(column)
    for ref in rows:
        metrics = ", ".join(
            f"{k[len('metric.') :]}={v}" for k, v in sorted(ref.tags.items()) if k.startswith("metric.")
        )
        detail = ref.tags.get("experts", metrics) if ref.name == resolved.registry.moe_model else metrics
        if ref.status.startswith("revoked"):
            detail = f"{ref.tags.get('revoked_reason') or ref.tags.get('revoked_dependency', '')} {detail}".strip()
        style = "red" if ref.status.startswith("revoked") else None
        table.add_row(
            ref.name,
            ref.version,
            ref.status,
            ref.owner,
            ",".join(ref.aliases),
            ref.sha256[:12],
            ref.tags.get("data_md5", "")[:12],
            detail,
            style=style,
        )
    console.print(
        table if rows else "no registered versions yet: run the pipeline (`flexo run`) first",
        width=max(console.width, TABLE_WIDTH),
    )


@app.command("revoke")
def revoke_command(
    domain: Annotated[str, typer.Argument(help="The expert's domain, e.g. news.")],
    version: Annotated[str, typer.Argument(help="The version to revoke (see `flexo experts`).")],
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="Why (recorded in the version tags and the audit trail).")
    ],
    by: Annotated[
        str | None, typer.Option("--by", help="Who revokes (default: $MLFLOW_TRACKING_USERNAME, else the OS user).")
    ] = None,
    reassemble: Annotated[
        bool, typer.Option("--reassemble/--no-reassemble", help="Re-assemble flexo-moe without it and move `serving`.")
    ] = True,
    profile: ProfileOption = None,
) -> None:
    """Revoke an expert version: status=revoked with who/when/why, aliases removed, audit record, MoE versions
    holding it marked revoked_dependency, flexo-moe re-assembled without it. Afterwards nothing loads it (exit 6 on
    any attempt)."""
    from tasks.registry.governance import assemble_and_register, revoke

    resolved = load(profile)
    result = revoke(resolved, domain, version, reason, by=by, reassemble=assemble_and_register if reassemble else None)
    console.print(
        f"[bold]{result.expert.label}[/] revoked by {result.expert.tags['revoked_by']} at "
        f"{result.expert.tags['revoked_at']}; aliases removed: {result.removed_aliases or 'none'}"
    )
    if result.revoked_dependencies:
        console.print(f"marked revoked_dependency: {', '.join(result.revoked_dependencies)}")
    if result.new_moe is not None:
        console.print(f"serving now: {result.new_moe.label} with experts [{result.new_moe.tags.get('experts', '')}]")
    if result.certificate is not None:
        from flows.certificate import certify_extraction

        cert = certify_extraction(resolved, result.certificate, by)
        console.print(
            f"certificate: max |delta logit| {cert['max_abs_delta_logit']} against {cert['previous_moe']} with it "
            f"masked, attribution {cert['attribution_serving']}; {cert['extraction']['verdict']} ({cert['path']})",
            highlight=False,
        )


@app.command("follow")
def follow_command(
    interval: Annotated[float, typer.Option("--interval", help="Seconds between looks at the registry.")] = 10.0,
    once: Annotated[bool, typer.Option("--once", help="Look once, then exit.")] = False,
    profile: ProfileOption = None,
) -> None:
    """Let revocations made in the MLflow UI, client or REST reach `serving`: whenever the serving MoE holds an expert
    the registry withdrew, mark the MoE versions holding it and re-assemble without it, as `flexo revoke` does. Runs
    until stopped (the `follow_revocations` deployment does the same every minute)."""
    from tasks.registry.governance import follow_revocations

    if interval <= 0:
        raise ConfigError(f"--interval {interval}: give a number of seconds above 0")
    resolved = load(profile)
    while True:
        done = follow_revocations(resolved)
        for name, why in done["withdrawn"].items():
            console.print(f"[yellow]withdrawn {name}:[/] {why}", highlight=False)
        if done["new_moe"]:
            console.print(f"serving now: {done['new_moe']} ({', '.join(done['revoked_dependencies'])} unserved)")
        if once:
            return
        time.sleep(interval)


@app.command("audit")
def audit_command(profile: ProfileOption = None, as_json: JsonOption = False) -> None:
    """The append-only audit trail of the registry (registrations, alias moves, revocations), oldest first; read-only.
    Exit 5 when its hash chain shows a record removed or changed outside flexo (the trail is printed first)."""
    from rich.table import Table

    from tasks.core.errors import IntegrityError
    from tasks.registry.governance import audit_breaks, audit_trail

    resolved = load(profile)
    records = audit_trail(resolved)
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in records], indent=2))
    else:
        table = Table(title="flexo audit trail")
        for column in ("at (UTC)", "event", "model", "version", "actor", "detail"):
            table.add_column(column)
        for r in records:
            table.add_row(r.at, r.event, r.model, r.version, r.actor, json.dumps(r.detail, sort_keys=True))
        console.print(table if records else "the audit trail is empty", width=max(console.width, TABLE_WIDTH))
    breaks = audit_breaks(resolved)
    if breaks:
        raise IntegrityError("the audit trail was altered outside flexo:\n" + "\n".join(breaks))


@app.command("generate")
def generate_command(
    prompt: Annotated[str, typer.Argument(help="The prompt to continue.")],
    experts: Annotated[
        str | None, typer.Option("--experts", help="Opt in: only these experts (comma-separated) + public.")
    ] = None,
    exclude: Annotated[
        str | None, typer.Option("--exclude", help="Opt out: drop these experts (comma-separated).")
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", help="Default: registry.generate_max_new_tokens.")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="A flexo-moe version (default: the `serving` alias).")
    ] = None,
    profile: ProfileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Greedy generation with the serving MoE; per-request opt-in/opt-out (no reload) and attribution per expert.
    Experts the registry withdrew (however they were revoked) are masked; asking for one by name exits 6."""
    from tasks.registry.request import check_names, check_request

    resolved = load(profile)
    chosen, dropped = _split(experts, "--experts"), _split(exclude, "--exclude")
    length = resolved.registry.generate_max_new_tokens if max_new_tokens is None else max_new_tokens
    check_request(prompt, length)  # before torch and MLflow are imported: a bad argument costs no model load
    check_names(resolved, chosen, dropped)
    from tasks.registry.serving import generate_from_registry

    answer = generate_from_registry(resolved, prompt, chosen, dropped, length, version)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    typer.echo(answer["text"])
    shares = ", ".join(f"{name} {share:.1%}" for name, share in answer["attribution"].items())
    console.print(f"[dim]{answer['model']} ({answer['expert_versions']}); attribution: {shares}[/]")
    for name, why in answer["withdrawn"].items():
        console.print(f"[yellow]masked {name}:[/] {why}", highlight=False)


def _venv_env() -> dict[str, str]:
    """This interpreter's bin/ first on PATH (mlflow's scoring server runs `uvicorn` from there)."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


@app.command("serve")
def serve_command(
    port: Annotated[int | None, typer.Option("--port", help="Default: registry.serve_port.")] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="A flexo-moe version (default: the `serving` alias).")
    ] = None,
    profile: ProfileOption = None,
) -> None:
    """Serve the MoE (MLflow pyfunc) on 127.0.0.1: POST /invocations with {"dataframe_records": [{"prompt": ...}],
    "params": {"exclude": ["news"]}}. Refuses a revoked version; checks the sha256 of every file, the served code
    first, before MLflow imports it; masks every expert the registry withdraws, checked again at most every
    `consent_ttl_s` seconds (5) while it runs."""
    from tasks.core.tracking import tracking_uri
    from tasks.registry.serving import prepare_serving

    resolved = load(profile)
    chosen = resolved.registry.serve_port if port is None else port
    if not 0 < chosen < 65536:
        raise ConfigError(f"--port {chosen} is not a TCP port (1-65535)")
    ref, pyfunc_dir, withdrawn = prepare_serving(resolved, version)
    console.print(
        f"serving {ref.label} (experts {ref.tags.get('experts', '')}) on http://127.0.0.1:{chosen}/invocations"
    )
    for name, why in withdrawn.items():
        console.print(f"[yellow]masked {name}:[/] {why}", highlight=False)
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child process: stopping `flexo serve` stops the server (no orphaned uvicorn)
    os.execve(
        mlflow_cli,
        [
            mlflow_cli,
            "models",
            "serve",
            "-m",
            str(pyfunc_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(chosen),
            "--env-manager",
            "local",
        ],
        {**_venv_env(), "MLFLOW_TRACKING_URI": tracking_uri(resolved)},  # the registry its consent is checked in
    )


@app.command("ui")
def ui_command(
    profile: ProfileOption = None,
    prefect: Annotated[bool, typer.Option("--prefect/--no-prefect", help="Also start the Prefect UI.")] = True,
) -> None:
    """Start the MLflow UI (and the Prefect UI) on 127.0.0.1 over the configured stores; Ctrl-C stops both."""
    from tasks.core.tracking import is_local_store, tracking_uri

    resolved = load(profile)
    uri = tracking_uri(resolved)
    bin_dir = Path(sys.executable).parent
    command = [
        str(bin_dir / "mlflow"),
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(resolved.registry.ui_port),
    ]
    if is_local_store(uri):
        command += ["--default-artifact-root", resolved.path("mlflow_artifacts_dir").as_uri()]
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` stops the UIs too, like Ctrl-C
    # each UI in its own process group, stopped as a group: mlflow's and prefect's servers spawn workers of their own
    mlflow_ui = f"http://127.0.0.1:{resolved.registry.ui_port}"
    links = _experiment_links(resolved, mlflow_ui)  # before any server starts: a failure here leaves none behind
    processes = [subprocess.Popen(command, env=_venv_env(), start_new_session=True)]
    console.print(f"MLflow UI:  {mlflow_ui}  ({uri})")
    for line in links:
        console.print(line, highlight=False, soft_wrap=True)  # a URL must stay on one line to be clicked
    if prefect:
        prefect_ui = f"http://127.0.0.1:{resolved.registry.prefect_ui_port}"
        processes.append(
            subprocess.Popen(
                [
                    str(bin_dir / "prefect"),
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(resolved.registry.prefect_ui_port),
                ],
                # the UI's pages call the API they were served from (Prefect's default is port 4200, whatever --port)
                env={**_venv_env(), "PREFECT_UI_API_URL": f"{prefect_ui}/api"},
                start_new_session=True,
            )
        )
        console.print(f"Prefect UI: {prefect_ui}")
    try:
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:
        codes = [0]
    finally:
        for process in processes:
            _stop_group(process)
    raise typer.Exit(max(codes))


def _experiment_links(profile: Profile, mlflow_ui: str) -> list[str]:
    """The experiment's runs and its reviewer view (`tasks.core.tracking.experiment_url`, `reviewer_view_url`), its
    tags brought up to date first (a store from an older version lacks them); none before a run created the store."""
    from tasks.core import tracking

    if not tracking.store_exists(profile):
        return []
    experiment_id = tracking.setup(profile)
    return [
        f"  runs:          {tracking.experiment_url(mlflow_ui, experiment_id)}",
        f"  reviewer view: {tracking.reviewer_view_url(mlflow_ui, experiment_id)}"
        "  (stage, domain, val loss, bits per byte, extraction rate, data version)",
    ]


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process's whole group (its workers too), SIGKILL if it has not stopped within the grace period."""
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_GRACE_S)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
