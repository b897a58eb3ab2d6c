"""What a training step reads and how long it may train: the tokenized splits and the step budget, all checked before
any compute starts (splits present, text usable, budget at least one batch, tokenizer fits the model, device present).

Isolation (invariant 1): M_pub's inputs come only from data/public, an owner's only from data/<domain>.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.batching import PackedDataset, pack_documents
from model.config import TokenizerIds
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.datasets import read_texts
from tasks.core.device import resolve_device
from tasks.core.errors import ConfigError, DataError
from tasks.core.sizing import check_passes, trainings
from tasks.core.tokenizer import load_tokenizer

PUBLIC = "public"


@dataclass(frozen=True)
class TrainInputs:
    """One step's packed train and val splits, the tokenizer that made them, and the optimizer steps it will run."""

    tokenizer: Any
    train: PackedDataset
    val: PackedDataset
    steps: int


def token_ids(tokenizer: Any) -> TokenizerIds:
    return TokenizerIds(tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id)


def tokenize(tokenizer: Any, texts: list[str], seq_len: int, batch: int = 256) -> PackedDataset:
    """Tokenize (no special tokens), end each document with EOS, pack into `seq_len` rows."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), batch):
        ids.extend(tokenizer(texts[start : start + batch], add_special_tokens=False)["input_ids"])
    return PackedDataset(pack_documents(ids, tokenizer.eos_token_id), seq_len)


def data_digest(*datasets: PackedDataset) -> str:
    """sha256 of the packed token streams: part of the resume fingerprint (other data = another run)."""
    digest = hashlib.sha256()
    for data in datasets:
        digest.update(np.ascontiguousarray(data.tokens).tobytes())
    return digest.hexdigest()


def check_budget(
    section: str, tokens: int, batch_size: int, seq_len: int, train: PackedDataset, split_path: Path
) -> int:
    """Optimizer steps for the budget; a budget below one batch or a split smaller than one batch is refused (the passes
    over the split are checked by `tasks.core.sizing.check_passes`)."""
    per_step = batch_size * seq_len
    steps = tokens // per_step
    if steps < 1:
        raise ConfigError(
            f"{section}: token budget {tokens} is below one batch ({batch_size} x {seq_len} = {per_step})"
        )
    if train.num_sequences < batch_size:
        raise DataError(
            f"{split_path}: only {train.num_sequences} sequences of {seq_len} tokens ({len(train.tokens)} tokens), "
            f"fewer than one batch of {batch_size}; add data or lower {section}.batch_size"
        )
    return steps


def epochs(steps: int, batch_size: int, train: PackedDataset) -> float:
    """Passes over the train split that `steps` optimizer steps make (recorded with every run: a reviewer sees
    repetition)."""
    return steps * batch_size / train.num_sequences


def public_inputs(profile: Profile) -> TrainInputs:
    """data/public's train and val splits for M_pub, under `train_public`'s budget."""
    cfg = profile.train_public
    resolve_device(profile)  # a device this machine lacks is a config error before any compute
    return _read(profile, PUBLIC, cfg.seq_len, cfg.batch_size)


def owner_inputs(profile: Profile, domain: str) -> TrainInputs:
    """An owner's train and val splits under the expert budget (the expert's and the dense domain model's)."""
    if domain not in profile.closed_domains:
        raise ConfigError(f"'{domain}' is not a data owner's domain; choose one of {profile.closed_domains}")
    resolve_device(profile)  # before the tokenizing and the router embedding
    return _read(profile, domain, profile.train_expert.seq_len, profile.train_expert.batch_size)


def _read(profile: Profile, domain: str, seq_len: int, batch_size: int) -> TrainInputs:
    """Tokenize and pack the splits, then refuse a budget below one batch or above `max_epochs` passes over the packed
    train split (exact: the data card's count at config load leaves out the EOS each document adds)."""
    tokenizer = load_tokenizer(profile)
    train = tokenize(tokenizer, read_texts(profile, domain, "train"), seq_len)
    val = tokenize(tokenizer, read_texts(profile, domain, "val"), seq_len)
    split_path = RunPaths(profile).split(domain, "train")
    training = next(t for t in trainings(profile, pretrain=True) if t.domain == domain)
    steps = check_budget(training.budget_key, training.tokens, batch_size, seq_len, train, split_path)
    check_passes(profile, training, train.num_sequences * seq_len, f"{split_path}, packed")
    return TrainInputs(tokenizer, train, val, steps)
