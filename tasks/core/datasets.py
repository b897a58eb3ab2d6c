"""Reading the built data: one split of one domain, and the content hash of a domain for lineage.

Why: training, routing and evaluation read data only through here, so every read can be tied to the DVC hash of the
exact `data/<domain>` directory it came from (invariant 7, lineage). Every read is also checked by bytes: the data
build records each split's sha256 in the domain's split.json when it writes the split, and a split whose bytes no
longer match is refused (IntegrityError, exit 5) naming the file, before anything trains, evaluates or attacks on it.
Why the build's own record and not the DVC one: `flexo data` without `--version` legitimately leaves dvc.lock behind
the data, while the build's record is always current. Splits with no recorded hash (built before hashes were
recorded, or written by hand) are read as they are.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.errors import DataError, IntegrityError

SPLIT_NAMES = ("train", "val", "test")
SPLIT_RECORD = "split.json"  # beside the splits: counts, decontamination and each split's sha256 (SPLIT_HASHES)
SPLIT_HASHES = "sha256"  # split.json key: {split: sha256 of the parquet file's bytes}
READ_BLOCK = 1 << 20  # bytes hashed at a time: a large split never sits in memory whole


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
    return pd.read_parquet(verified(profile, domain, split))


def read_texts(profile: Profile, domain: str, split: str) -> list[str]:
    """The `text` column of one split, checked: a missing file or column, an empty split, or an empty/null row is a
    DataError naming the file and the rows (what trains or embeds must not silently skip bad rows)."""
    path = RunPaths(profile).split(domain, split)
    if not path.exists():
        raise DataError(f"{path}: the {split} split of '{domain}' is missing; run `flexo data` for '{domain}' first")
    frame = pd.read_parquet(verified(profile, domain, split))
    if "text" not in frame.columns:
        raise DataError(f"{path}: no `text` column (columns: {list(frame.columns)})")
    texts = frame["text"]
    bad = [int(i) for i in np.flatnonzero(texts.isna().to_numpy() | (texts.astype(str).str.len() == 0).to_numpy())]
    if bad:
        raise DataError(f"{path}: row(s) {bad[:5]} have an empty or null `text`; fix or re-run the data stage")
    if len(texts) == 0:
        raise DataError(f"{path}: the split has no rows")
    return texts.astype(str).tolist()


def split_hashes(profile: Profile, domain: str) -> dict[str, str]:
    """{split: sha256 of its file's bytes} of every split of data/<domain> on disk: what the data build records in
    split.json whenever it writes the splits (plain sha256, so `sha256sum` checks it by hand)."""
    paths = RunPaths(profile)
    return {s: _file_digest(paths.split(domain, s), "sha256") for s in SPLIT_NAMES if paths.split(domain, s).exists()}


def verified(profile: Profile, domain: str, split: str) -> Path:
    """data/<domain>/<split>.parquet once its bytes match the sha256 the data build recorded in split.json; an
    IntegrityError naming the file when they do not (changed after it was built and versioned)."""
    path = RunPaths(profile).split(domain, split)
    record = path.parent / SPLIT_RECORD
    if not record.exists():
        return path
    try:
        expected = json.loads(record.read_text(encoding="utf-8")).get(SPLIT_HASHES, {}).get(split)
    except (json.JSONDecodeError, AttributeError) as err:
        raise IntegrityError(
            f"{record}: unreadable ({err}), so {path} cannot be checked against the sha256 recorded when it was built; "
            f"restore data/{domain} (`dvc checkout data/{domain}`) or rebuild it (`flexo data --domain {domain}`)"
        ) from err
    if expected is None:
        return path
    actual = _file_digest(path, "sha256")
    if actual != expected:
        raise IntegrityError(
            f"{path}: sha256 {actual} differs from {expected}, recorded in {record} when the data build wrote it: "
            f"the split was changed afterwards. Restore it (`dvc checkout data/{domain}`) or rebuild the domain "
            f"(`flexo data --domain {domain}`)"
        )
    return path


def _file_digest(path: Path, algorithm: str) -> str:
    """A file's hashlib digest, read in READ_BLOCK blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(READ_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_md5(root: Path) -> str:
    """DVC's directory hash (`<md5>.dir`, as recorded in dvc.lock / .dvc files) computed from the files themselves.

    DVC 3 hashes a directory as the md5 of the JSON list of {"md5", "relpath"} entries sorted by relpath.
    """
    entries = [
        {"md5": _file_digest(p, "md5"), "relpath": p.relative_to(root).as_posix()}
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def dataset_hash(profile: Profile, domain: str) -> str:
    """The DVC md5 of data/<domain> (what `dvc add`/`dvc repro` record), for MLflow lineage tags."""
    root = RunPaths(profile).domain_dir(domain)
    if not root.is_dir() or not any(root.iterdir()):
        raise DataError(f"{root}: no data for domain '{domain}'; run `flexo data --domain {domain}` or `dvc pull`")
    return directory_md5(root)
