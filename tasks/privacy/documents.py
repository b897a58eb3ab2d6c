"""The attack's targets: the domain's TRAIN split (what the models were trained on), tokenized, and the seeded sample of
windows the attack and the calibration probe.

Why the train split: extraction measures how much of the data a model saw it can reproduce; held-out text would
measure generalisation instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from model.extraction import Probe, make_probes
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.datasets import load_split
from tasks.core.errors import DataError


@dataclass(frozen=True)
class AttackDocuments:
    """The probes of one attack and what they were drawn from."""

    train_docs: int  # documents in the train split
    eligible: int  # of which at least `attack.window_tokens` long
    doc_ids: list[str]  # per split row, for the report
    probes: list[Probe]  # `attack.num_docs` windows the models are attacked on
    calibration_probes: list[Probe]  # `attack.calibration_docs` windows the calibration model is overfitted on


def training_documents(profile: Profile, domain: str) -> pd.DataFrame:
    """The domain's TRAIN split (what the models were trained on: the attack's targets)."""
    frame = load_split(profile, domain, "train")
    split = RunPaths(profile).split(domain, "train")
    missing = [c for c in ("id", "text") if c not in frame.columns]
    if missing:
        raise DataError(f"{split}: columns {missing} missing (expected id, text); rebuild the split with `flexo data`")
    bad = frame.index[frame["text"].isna() | frame["id"].isna()].tolist()
    if bad:
        raise DataError(f"{split}: row {bad[0]} has no id or text ({len(bad)} such rows); rebuild the split")
    return frame.reset_index(drop=True)


def select_probes(token_lists: list[list[int]], count: int, window: int, seed: int) -> tuple[list[Probe], int]:
    """A seeded sample of `count` documents among those >= window tokens, one random window each; (probes, eligible)."""
    eligible = [i for i, t in enumerate(token_lists) if len(t) >= window]
    order = np.random.default_rng(seed).permutation(len(eligible))[:count]
    chosen = [eligible[i] for i in order]
    probes, _ = make_probes([token_lists[i] for i in chosen], window, seed)
    # map back to row indices of the split
    return [Probe(chosen[p.doc_index], p.offset, p.window) for p in probes], len(eligible)


def attack_documents(profile: Profile, domain: str, tokenizer) -> AttackDocuments:
    """The train split tokenized and both probe samples drawn (the calibration's with `seed + 1`)."""
    a = profile.attack
    frame = training_documents(profile, domain)
    token_lists = tokenizer(frame["text"].tolist(), add_special_tokens=False)["input_ids"]
    probes, eligible = select_probes(token_lists, a.num_docs, a.window_tokens, profile.seed)
    if not probes:
        raise DataError(
            f"{RunPaths(profile).split(domain, 'train')}: no document has {a.window_tokens} tokens; "
            "lower attack.window_tokens"
        )
    calibration_probes, _ = select_probes(token_lists, a.calibration_docs, a.window_tokens, profile.seed + 1)
    doc_ids = frame["id"].astype(str).tolist()
    return AttackDocuments(len(frame), eligible, doc_ids, probes, calibration_probes)
