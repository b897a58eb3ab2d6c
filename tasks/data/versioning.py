"""DVC versioning per data owner: each `data/<domain>` is tracked on its own and pushed only to its owner's remote.

Why: an expert's data must be hashed, pushed, pulled and deleted independently of every other owner's. The remote is
a local directory under `paths.dvc_remotes_dir/<owner>` by default, or any DVC URL (e.g. `s3://bucket/prefix`, with
credentials kept in `.dvc/config.local`) from `domains.<d>.remote`.

Two layouts are supported: in a repository whose dvc.yaml has the `split` foreach stage, `data/<domain>` is that
stage's output (`dvc commit split@<domain>` records it, the output's `remote:` names the owner); elsewhere (a fresh
repository, a user's own project) `dvc add data/<domain>` writes `data/<domain>.dvc` with `remote: <owner>`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.datasets import dataset_hash
from tasks.core.errors import DataError

DVC_ENV = {"DVC_NO_ANALYTICS": "1", "DVC_DAEMON": "0"}


@dataclass(frozen=True)
class VersionResult:
    domain: str
    owner: str
    remote: str
    remote_url: str
    md5: str
    tracked_by: str  # the .dvc file or "dvc.lock:split@<domain>"
    pushed: bool


def repo_root(profile: Profile) -> Path:
    """The git+DVC repository that holds the data directory (its parent)."""
    return profile.path("data_dir").parent


def dvc(repo: Path, *args: str) -> str:
    """Run the DVC CLI of this environment in `repo`; a failure is a DataError with DVC's own message."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **DVC_ENV},
        check=False,
    )
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise DataError(f"`dvc {' '.join(args)}` failed in {repo} (exit {proc.returncode}): {tail}")
    return proc.stdout


def ensure_dvc(repo: Path) -> None:
    """`dvc init` (analytics off) if the repository has no .dvc yet; a git repository is required."""
    if (repo / ".dvc").is_dir():
        return
    if not (repo / ".git").exists():
        raise DataError(f"{repo}: not a git repository; run `git init` there first (DVC metadata is versioned by git)")
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")


def remote_url(profile: Profile, domain: str, repo: Path) -> str:
    """The owner's remote: `domains.<d>.remote` if set, else `<dvc_remotes_dir>/<owner>` (relative to the repository;
    `dvc remote add` rewrites it relative to .dvc/config)."""
    cfg = profile.domains[domain]
    if cfg.remote:
        return cfg.remote
    local = profile.path("dvc_remotes_dir") / cfg.owner
    local.mkdir(parents=True, exist_ok=True)
    return os.path.relpath(local, repo)


def ensure_remote(profile: Profile, domain: str, repo: Path) -> tuple[str, str]:
    """Add (or update) the DVC remote named after the domain's owner; returns (name, url)."""
    name, url = profile.domains[domain].owner, remote_url(profile, domain, repo)
    dvc(repo, "remote", "add", "-f", name, url)
    return name, url


def _stage_tracks(repo: Path, domain: str) -> bool:
    """Whether dvc.yaml's `split` foreach stage produces data/<domain> (the pipeline layout)."""
    path = repo / "dvc.yaml"
    if not path.exists():
        return False
    stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {})
    return "split" in stages and "foreach" in stages["split"]


def version_domain(profile: Profile, domain: str, push: bool = True) -> VersionResult:
    """Record data/<domain>'s hash with DVC and push it to the owner's remote only; returns the md5 for lineage."""
    repo = repo_root(profile)
    data_dir = RunPaths(profile).domain_dir(domain)
    md5 = dataset_hash(profile, domain)
    ensure_dvc(repo)
    remote, url = ensure_remote(profile, domain, repo)
    rel = data_dir.relative_to(repo).as_posix()
    if _stage_tracks(repo, domain):
        target = f"split@{domain}"
        # record the whole chain, so `dvc repro` sees it up to date (one CLI call: each start costs about a second)
        dvc(repo, "commit", "-f", "-q", *(f"{stage}@{domain}" for stage in ("ingest", "validate", "split")))
        tracked = f"dvc.lock:{target}"
    else:
        dvc(repo, "add", "-q", rel)
        dvc_file = repo / f"{rel}.dvc"
        meta = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
        meta["outs"][0]["remote"] = remote  # this output goes to its owner's remote, whatever the default is
        dvc_file.write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        target, tracked = f"{rel}.dvc", f"{rel}.dvc"
    if push:
        dvc(repo, "push", "-q", target)
    return VersionResult(domain, profile.domains[domain].owner, remote, url, md5, tracked, push)


SHARED_STAGES = ("disjoint", "tokenizer", "cards")  # dvc.yaml's cross-domain stages


def _stage_paths(stage: dict) -> set[str]:
    """The paths a dvc.yaml stage writes (its `outs` and `metrics`, each a path or a one-key {path: options})."""
    entries = [*stage.get("outs", []), *stage.get("metrics", [])]
    return {next(iter(e)) if isinstance(e, dict) else str(e) for e in entries}


def _written_here(profile: Profile, repo: Path) -> dict[str, set[str]]:
    """What this profile's data build writes for each shared stage, relative to the repository. A profile with an
    existing M_pub trains no tokenizer and keeps its reports under reports/data/<profile>/; a profile with its own data
    folder writes elsewhere too: their stages are not the ones dvc.yaml describes."""
    paths = RunPaths(profile)

    def rel(path: Path) -> str:
        return (
            path.resolve().relative_to(repo.resolve()).as_posix()
            if path.resolve().is_relative_to(repo.resolve())
            else ""
        )

    reports = paths.data_reports_dir
    written = {"disjoint": {rel(reports / "disjoint.json")}, "cards": {rel(reports / "cards")}}
    if not profile.anchor.pretrained:
        written["tokenizer"] = {rel(paths.tokenizer_dir), rel(reports / "bytes_per_token.json")}
    return written


def record_shared_stages(profile: Profile) -> list[str]:
    """`dvc commit` dvc.yaml's cross-domain stages (disjointness check, tokenizer, cards) once every domain is built, so
    after a pipeline run `dvc status` is clean and `dvc repro` reruns only what changed. A repository without the
    pipeline's dvc.yaml (each domain a `dvc add` output) has no such stages: nothing to record. A stage whose outputs
    this profile does not write (an anchor's profile, a profile with its own data folder) is left as it is: committing
    it would record another build's files, or fail on a tokenizer that was never trained."""
    repo = repo_root(profile)
    path = repo / "dvc.yaml"
    stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {}) if path.exists() else {}
    written = _written_here(profile, repo)
    chosen = [s for s in SHARED_STAGES if s in stages and _stage_paths(stages[s]) <= written.get(s, set())]
    if not chosen:
        return []
    ensure_dvc(repo)
    dvc(repo, "commit", "-f", "-q", *chosen)
    return chosen
