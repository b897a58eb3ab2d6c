"""What the flows hand to their steps: the validated profile, and the content hashes a step's cache key is made of
(its data, the weights and tokenizer it starts from) and the metrics a registration records."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks.core.artifacts import WEIGHTS_FILE, RunPaths
from tasks.core.config import Profile, load_profile
from tasks.core.datasets import dataset_hash
from tasks.core.hashing import file_sha256


def as_profile(profile: str | Profile | None, check_data: bool = True) -> Profile:
    """A flow parameter (a profile name, or a resolved Profile from a test or a caller) as a validated Profile;
    `check_data=False` where the flow rebuilds the data cards the sizing check reads."""
    return profile if isinstance(profile, Profile) else load_profile(profile, check_data=check_data)


def data_hash(profile: Profile, domain: str) -> str:
    """The content hash of data/<domain> for cache keys and lineage: its DVC md5 (`tasks.core.datasets.dataset_hash`),
    else, before the domain is versioned, `sha256:<hex>` over its files ("" when there is no data yet)."""
    try:
        return dataset_hash(profile, domain)
    except Exception:  # not versioned yet: the content itself is the key
        directory = RunPaths(profile).domain_dir(domain)
        return f"sha256:{file_sha256(directory)}" if directory.exists() else ""


def weights_sha(model_dir: str | Path) -> str:
    """sha256 of a save_pretrained directory's weights file ("" when absent)."""
    weights = Path(model_dir) / WEIGHTS_FILE
    return file_sha256(weights) if weights.exists() else ""


def router_row_sha(profile: Profile, domain: str) -> str:
    """sha256 of a domain's router row file ("" before its router step wrote it)."""
    row = RunPaths(profile).router_embedding(domain)
    return file_sha256(row) if row.exists() else ""


def tokenizer_sha(profile: Profile) -> str:
    """sha256 of the trained tokenizer's files ("" before the data stage trained it)."""
    directory = RunPaths(profile).tokenizer_dir
    return file_sha256(directory) if directory.exists() else ""


def metrics_of(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric final metrics of a training result (its `metrics` mapping), for registration tags."""
    metrics = result.get("metrics") or {}
    return {str(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
