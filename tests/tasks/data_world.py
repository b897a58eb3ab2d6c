"""Test helpers for the data plane: real files in tmp_path and profiles whose domains point at them (no mocks)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

from tasks.core.config import DomainConfig, Profile, SourceConfig

WORDS = (
    "river stone market window garden letter winter summer teacher doctor village engine library station "
    "harbor mountain forest kitchen bridge castle farmer painter sailor island valley meadow candle "
    "lantern morning evening silver golden quiet gentle rapid ancient modern simple careful"
).split()


def prose(rng: random.Random, words: int = 60) -> str:
    """A readable, unique-enough paragraph (random words, so no two documents share 13-grams by chance)."""
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def write_txt_folder(folder: Path, n: int, seed: int = 0, words: int = 60) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        text = prose(rng, words)
        (folder / f"doc{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
        texts.append(text)
    return texts


def folder_domain(path: Path, owner: str = "owner", redact_pii: bool = False, **options) -> DomainConfig:
    return DomainConfig(
        owner=owner,
        source=SourceConfig(adapter="folder", options={"path": str(path), **options}),
        redact_pii=redact_pii,
    )


def with_domains(profile: Profile, domains: dict[str, DomainConfig], **data_updates) -> Profile:
    data = profile.data.model_copy(update=data_updates) if data_updates else profile.data
    return profile.model_copy(update={"domains": domains, "data": data})


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
