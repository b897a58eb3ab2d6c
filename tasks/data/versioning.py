"""DVC versioning per data owner: each `data/<domain>` is tracked on its own and pushed only to its owner's remote.

Why: an expert's data must be hashed, pushed, pulled and deleted independently of every other owner's. The remote is
a local directory under `paths.dvc_remotes_dir/<owner>` by default, or any DVC URL (e.g. `s3://bucket/prefix`, with
credentials kept in `.dvc/config.local`) from `domains.<d>.remote`.

Two layouts are supported: in a repository whose dvc.yaml has the `split` foreach stage, `data/<domain>` is that
stage's output (`dvc commit split@<domain>` records it, the output's `remote:` names the owner); elsewhere (a fresh
repository, a user's own project) `dvc add data/<domain>` writes `data/<domain>.dvc` with `remote: <owner>`.

DVC runs in this process through its Python API (`dvc.repo.Repo`, one per operation, so each reads the config afresh
as a CLI call would): a `dvc` command per operation started an interpreter and imported DVC each time, about 0.8 s,
three per domain.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.datasets import dataset_hash
from tasks.core.errors import DataError

if TYPE_CHECKING:
    from dvc.repo import Repo

_CWD_LOCK = threading.Lock()  # the working directory is the process's: one DVC operation at a time


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


@contextlib.contextmanager
def _inside(repo: Path, operation: str) -> Iterator[None]:
    """Run DVC's Python API from inside `repo`, as its CLI runs (DVC's internals, the run cache among them, read paths
    relative to the working directory; `flexo` commands already run from the repository root, so there it does not
    change), with DVC's INFO messages off as the CLI's `-q` has them; a DVC failure becomes a DataError naming the
    operation, the repository and DVC's own message."""
    from dvc.exceptions import DvcException

    dvc_logger = logging.getLogger("dvc")
    level = dvc_logger.level
    try:
        with _CWD_LOCK, contextlib.chdir(repo):
            dvc_logger.setLevel(logging.WARNING)
            yield
    except DvcException as exc:
        raise DataError(f"`dvc {operation}` failed in {repo}: {exc}") from exc
    finally:
        dvc_logger.setLevel(level)


@contextlib.contextmanager
def dvc_repo(repo: Path, operation: str) -> Iterator[Repo]:
    """DVC's `Repo` on `repo` for one operation (`_inside` it)."""
    from dvc.repo import Repo

    with _inside(repo, operation), Repo(str(repo)) as opened:
        yield opened


def ensure_dvc(repo: Path) -> None:
    """`dvc init` (analytics off) if the repository has no .dvc yet; a git repository is required."""
    from dvc.repo import Repo

    if (repo / ".dvc").is_dir():
        return
    if not (repo / ".git").exists():
        raise DataError(f"{repo}: not a git repository; run `git init` there first (DVC metadata is versioned by git)")
    with _inside(repo, "init"):
        Repo.init(str(repo)).close()
    with dvc_repo(repo, "config core.analytics false") as opened, opened.config.edit() as conf:
        conf["core"]["analytics"] = "false"


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
    with dvc_repo(repo, f"remote add -f {name} {url}") as opened, opened.config.edit() as conf:
        conf["remote"][name] = {"url": url}  # as `dvc remote add -f` does: a local path is stored relative to .dvc/
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
        # record the whole chain, so `dvc repro` sees it up to date
        commit(repo, [f"{stage}@{domain}" for stage in ("ingest", "validate", "split")])
        tracked = f"dvc.lock:{target}"
    else:
        with dvc_repo(repo, f"add {rel}") as opened:
            opened.add(rel)
        dvc_file = repo / f"{rel}.dvc"
        meta = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
        meta["outs"][0]["remote"] = remote  # this output goes to its owner's remote, whatever the default is
        dvc_file.write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        target, tracked = f"{rel}.dvc", f"{rel}.dvc"
    if push:
        with dvc_repo(repo, f"push {target}") as opened:
            opened.push(targets=[target])
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
    commit(repo, chosen)
    return chosen


def commit(repo: Path, targets: list[str]) -> None:
    """`dvc commit -f` of each target: record its outputs' current hashes in dvc.lock (or its .dvc file)."""
    with dvc_repo(repo, "commit -f " + " ".join(targets)) as opened:
        for target in targets:
            opened.commit(target, force=True)
