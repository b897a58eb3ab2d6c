"""Nothing leaves the registry unchecked: a download refuses a revoked version (RevokedError naming who, when and why)
and re-hashes the weights against the registered sha256, and every other stored file (served code, MLmodel, model and
expert cards) against the version's `files_sha256` record, before returning a path (IntegrityError naming the file).

The hash is of the file's bytes alone (`model.hashing.sha256_file`), the same digest export and assembly record.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from model.hashing import sha256_file
from tasks.core.artifacts import EXPERT_FILE, WEIGHTS_FILE, RunPaths
from tasks.core.config import Profile
from tasks.core.errors import IntegrityError
from tasks.core.tracking import setup
from tasks.registry.digests import check_tree
from tasks.registry.names import TAG_FILES, VersionRef, check_usable

EXPERT_MODEL_PREFIX = "flexo-expert-"  # DESIGN.md's name; a renamed prefix is recognised by its expert file instead
MLMODEL_FILE = "MLmodel"  # MLflow's description of a logged model: names the code a pyfunc imports


def fetch(profile: Profile, ref: VersionRef) -> Path:
    """Download a usable version into the registry cache and verify its weights' sha256; returns the local directory."""
    import mlflow

    check_usable(ref)
    if not ref.sha256:
        raise IntegrityError(f"{ref.label} has no sha256 tag; it cannot be verified and will not be loaded")
    target = RunPaths(profile).registry_cache / ref.name / ref.version
    if target.exists():
        shutil.rmtree(target)  # always a fresh copy: a cached file could have been changed
    target.mkdir(parents=True)
    setup(profile)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.source, dst_path=str(target)))
    verify_files(ref, local)
    return local


def verify_files(ref: VersionRef, local: Path) -> None:
    """IntegrityError unless the weights hash to the `sha256` tag and every stored file to the `files_sha256` record.
    A version holding code to import (an MLmodel) without that record cannot be verified, so it is refused."""
    verify(ref, weights_path(ref, local))
    recorded = ref.tags.get(TAG_FILES)
    if recorded:
        check_tree(ref.label, local, recorded)
    elif (local / MLMODEL_FILE).exists():
        raise IntegrityError(
            f"{ref.label} was registered without a record of its files' sha256, so its served code "
            f"({local}) cannot be verified and will not be loaded; re-assemble it (`flexo run --stage assemble`)"
        )


def weights_path(ref: VersionRef, local_dir: Path) -> Path:
    """Where a downloaded version keeps its weights (expert file, M_pub's or the MoE's model.safetensors)."""
    if ref.name.startswith(EXPERT_MODEL_PREFIX) or (local_dir / EXPERT_FILE).exists():
        return local_dir / EXPERT_FILE
    if (local_dir / WEIGHTS_FILE).exists():
        return local_dir / WEIGHTS_FILE
    return moe_dir(local_dir) / WEIGHTS_FILE


def moe_dir(pyfunc_dir: Path) -> Path:
    """The assembled model directory inside a downloaded `flexo-moe` pyfunc."""
    candidates = [p.parent for p in (Path(pyfunc_dir) / "artifacts").rglob(WEIGHTS_FILE)]
    if len(candidates) != 1:
        raise IntegrityError(f"{pyfunc_dir}: expected one assembled model inside the pyfunc, found {len(candidates)}")
    return candidates[0]


def verify(ref: VersionRef, path: Path) -> None:
    """IntegrityError unless `path` hashes to the sha256 the registry recorded for `ref`."""
    if not path.exists():
        raise IntegrityError(f"{ref.label}: weights file {path} is missing from the downloaded artifacts")
    actual = sha256_file(path)
    if actual != ref.sha256:
        raise IntegrityError(
            f"{ref.label}: {path.name} has sha256 {actual[:12]}…, the registry recorded {ref.sha256[:12]}…; the stored "
            "file was changed after registration. Refusing to load it: re-register from a trusted copy."
        )


def expert_files(profile: Profile, refs: Sequence[VersionRef]) -> list[Path]:
    """Downloaded, sha256-verified expert files for assembly (same order as `refs`)."""
    return [fetch(profile, ref) / EXPERT_FILE for ref in refs]
