"""Reading the built data: one split of one domain, and the content hash of a domain for lineage.

Why: training, routing and evaluation read data only through here, so every read can be tied to the DVC hash of the
exact `data/<domain>` directory it came from (invariant 7, lineage).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.errors import DataError

SPLIT_NAMES = ("train", "val", "test")


def load_split(profile: Profile, domain: str, split: str) -> pd.DataFrame:
    """data/<domain>/<split>.parquet as a DataFrame (`id`, `text`, domain columns such as math `question`/`answer`)."""
    if split not in SPLIT_NAMES:
        raise DataError(f"split '{split}' is not one of {SPLIT_NAMES}")
    if domain not in profile.domains:
        raise DataError(f"domain '{domain}' is not configured in params.yaml (domains: {sorted(profile.domains)})")
    path = RunPaths(profile).split(domain, split)
    if not path.exists():
        raise DataError(
            f"{path}: the {split} split of '{domain}' is missing; build it with "
            f"`flexo data --profile {profile.name} --domain {domain}` "
            f"or fetch it with `dvc pull data/{domain}`"
        )
    return pd.read_parquet(path)


def read_texts(profile: Profile, domain: str, split: str) -> list[str]:
    """The `text` column of one split, checked: a missing file or column, an empty split, or an empty/null row is a
    DataError naming the file and the rows (what trains or embeds must not silently skip bad rows)."""
    path = RunPaths(profile).split(domain, split)
    if not path.exists():
        raise DataError(f"{path}: the {split} split of '{domain}' is missing; run `flexo data` for '{domain}' first")
    frame = pd.read_parquet(path)
    if "text" not in frame.columns:
        raise DataError(f"{path}: no `text` column (columns: {list(frame.columns)})")
    texts = frame["text"]
    bad = [int(i) for i in np.flatnonzero(texts.isna().to_numpy() | (texts.astype(str).str.len() == 0).to_numpy())]
    if bad:
        raise DataError(f"{path}: row(s) {bad[:5]} have an empty or null `text`; fix or re-run the data stage")
    if len(texts) == 0:
        raise DataError(f"{path}: the split has no rows")
    return texts.astype(str).tolist()


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_md5(root: Path) -> str:
    """DVC's directory hash (`<md5>.dir`, as recorded in dvc.lock / .dvc files) computed from the files themselves.

    DVC 3 hashes a directory as the md5 of the JSON list of {"md5", "relpath"} entries sorted by relpath.
    """
    entries = [
        {"md5": _file_md5(p), "relpath": p.relative_to(root).as_posix()} for p in sorted(root.rglob("*")) if p.is_file()
    ]
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def dataset_hash(profile: Profile, domain: str) -> str:
    """The DVC md5 of data/<domain> (what `dvc add`/`dvc repro` record), for MLflow lineage tags."""
    root = RunPaths(profile).domain_dir(domain)
    if not root.is_dir() or not any(root.iterdir()):
        raise DataError(f"{root}: no data for domain '{domain}'; run `flexo data --domain {domain}` or `dvc pull`")
    return directory_md5(root)
