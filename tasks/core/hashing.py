"""Content hashes for cache keys and lineage, and the JSON form a step's result is hashed and cached in.

Why here: the Prefect layer, the registry and training all hash files and results; one implementation means one
meaning of "the same bytes" everywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

CHUNK = 1 << 20  # bytes read at a time: large weight files never sit in memory whole


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, or of every file under a directory (relative names + bytes, in sorted order)."""
    digest = hashlib.sha256()
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for file in files:
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(root: Path, paths: Iterable[Path], suffix: str = ".py") -> str:
    """sha256 over every `suffix` file under each of `paths` (names relative to `root`, then bytes): the fingerprint of
    a body of source code, so editing any file in it changes the hash."""
    digest = hashlib.sha256()
    files: set[Path] = set()
    for path in paths:
        files.update(path.rglob(f"*{suffix}") if path.is_dir() else [path])
    for file in sorted(files):
        if file.is_file() and "__pycache__" not in file.parts:
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def jsonable(value: Any) -> Any:
    """A JSON-able copy of a result (dataclasses, pydantic models, paths); tensors are refused, never pickled."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    module = type(value).__module__
    if module.startswith(("torch", "numpy")) and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if module.startswith("torch"):
        raise TypeError(f"a step returned a {type(value).__name__}; steps return paths and hashes, never tensors")
    return str(value)


def json_sha256(value: Any) -> str:
    """sha256 of a result's canonical JSON (the cache key of steps that depend on another step's output)."""
    return hashlib.sha256(json.dumps(jsonable(value), sort_keys=True).encode()).hexdigest()
