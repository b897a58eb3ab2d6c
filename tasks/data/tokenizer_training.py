"""Tokenizer training: a byte-level BPE trained with `tokenizers` on the public train split only, saved as a
transformers tokenizer (eos and pad defined), plus bytes-per-token per domain and token counts for the data cards.

Why public only: the tokenizer is shared by every expert, so it must not encode any closed domain's data (invariant 1).
Bytes per token per domain shows how well that public vocabulary fits each owner's text.

The stages that feed a model load the tokenizer with `tasks.core.tokenizer.load_tokenizer`, which also refuses one
larger than `model.vocab_size`; the statistics here describe the data, whatever model is trained on it, so they read
the tokenizer without that check.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.datasets import load_split

EOS, PAD = "<|endoftext|>", "<|pad|>"
BATCH = 256  # documents per tokenizer batch


@dataclass(frozen=True)
class TokenizerResult:
    path: Path
    vocab_size: int
    trained_on_docs: int
    bytes_per_token: dict[str, float]


def train_tokenizer(profile: Profile) -> TokenizerResult:
    """Train on data/public/train.parquet and save to data/tokenizer/ (AutoTokenizer.from_pretrained works offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = load_split(profile, "public", "train")["text"].tolist()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=profile.tokenizer.vocab_size,
        min_frequency=profile.tokenizer.min_frequency,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, model_max_length=profile.model.max_seq_len
    )
    out = RunPaths(profile).tokenizer_dir
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    bpt = bytes_per_token(profile)
    return TokenizerResult(out, len(fast), len(texts), bpt)


def bytes_per_token(profile: Profile, split: str = "val") -> dict[str, float]:
    """UTF-8 bytes per token of each built domain's `split` under the trained tokenizer; written to reports/data/."""
    tok = _trained_tokenizer(profile)
    result: dict[str, float] = {}
    for domain in profile.domains:
        if not RunPaths(profile).split(domain, split).exists():
            continue
        texts = load_split(profile, domain, split)["text"].tolist()
        tokens = _count(tok, texts)
        result[domain] = round(sum(len(t.encode("utf-8")) for t in texts) / max(tokens, 1), 4)
    out = RunPaths(profile).data_reports_dir / "bytes_per_token.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"split": split, "bytes_per_token": result}, indent=2), encoding="utf-8")
    return result


def token_counts(profile: Profile, texts: list[str]) -> list[int]:
    """Tokens of each text under the trained tokenizer: one pass, summed per split and per source by the card."""
    return _per_text(_trained_tokenizer(profile), texts)


def _trained_tokenizer(profile: Profile) -> Any:
    """The tokenizer `train_tokenizer` saved in data/tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(RunPaths(profile).tokenizer_dir))


def _count(tok: Any, texts: list[str]) -> int:
    """Tokens of `texts` without special tokens, tokenized `BATCH` documents at a time."""
    return sum(_per_text(tok, texts))


def _per_text(tok: Any, texts: list[str]) -> list[int]:
    with _parallel_encoding():
        return _encoded_lengths(tok, texts)


@contextmanager
def _parallel_encoding() -> Iterator[None]:
    """Encoding gives the same ids on any number of threads (2x faster on 2 cores: the public card of the at-scale
    build tokenizes 300 MB). Elsewhere the process keeps TOKENIZERS_PARALLELISM=false (tasks/core/environment.py), and
    the tokenizer's *training* stays single-threaded so its merges cannot depend on the machine."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def _encoded_lengths(tok: Any, texts: list[str]) -> list[int]:
    return [
        len(ids)
        for i in range(0, len(texts), BATCH)
        for ids in tok(texts[i : i + BATCH], add_special_tokens=False)["input_ids"]
    ]
