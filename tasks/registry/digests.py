"""The sha256 of every file of a registered version: recorded at registration, checked on every download.

Why: the weights' hash alone let a changed `serving_entry.py` (code that `flexo serve` imports), `MLmodel` (which
names that code), model card or expert card pass unnoticed. The record is a version tag (`files_sha256`, JSON
{relative path: sha256}) in the registry's database, not a file beside the bytes it vouches for.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from model.hashing import sha256_file
from tasks.core.errors import IntegrityError

DOWNLOAD_ONLY = ("registered_model_meta",)  # written by MLflow into a downloaded registered model, never stored


def tree_digests(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` (MLflow's download-only files left out)."""
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(Path(root).rglob("*"))
        if path.is_file() and path.name not in DOWNLOAD_ONLY
    }


def encode(digests: Mapping[str, str]) -> str:
    return json.dumps(dict(digests), sort_keys=True)


def check_tree(label: str, root: Path, recorded: str) -> None:
    """IntegrityError naming the first file under `root` that is changed, missing or was never registered."""
    expected: dict[str, str] = json.loads(recorded)
    actual = tree_digests(root)
    for rel in sorted(set(expected) | set(actual)):
        path = Path(root) / rel
        if rel not in actual:
            raise IntegrityError(f"{label}: {path} is missing from the downloaded artifacts")
        if rel not in expected:
            raise IntegrityError(
                f"{label}: {path} was not among the files registered with it; the stored artifacts were changed "
                "after registration. Refusing to load them: re-register from a trusted copy."
            )
        if actual[rel] != expected[rel]:
            raise IntegrityError(
                f"{label}: {path} has sha256 {actual[rel][:12]}…, the registry recorded {expected[rel][:12]}…; the "
                "stored file was changed after registration. Refusing to load it: re-register from a trusted copy."
            )


def logged_model_digests(model_id: str) -> dict[str, str]:
    """The file digests of a logged MLflow model as stored: read in place from a local artifact store, else
    downloaded once."""
    import mlflow

    location = mlflow.get_logged_model(model_id).artifact_location
    if location.startswith("file://"):
        return tree_digests(Path(url2pathname(urlparse(location).path)))
    with tempfile.TemporaryDirectory() as tmp:
        return tree_digests(Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp)))
