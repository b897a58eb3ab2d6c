"""Packing token ids into fixed-length sequences and drawing batches in a seeded, resumable order.

Why: documents are concatenated (each ending in EOS) and cut into `seq_len` windows, so no compute is spent on padding.
The batch of step s is a pure function of (seed, s): epoch e's order is a permutation seeded by (seed, e), and the
global batch stream walks through the epochs back to back. A resumed run therefore sees exactly the sequences an
uninterrupted run would have seen, with no sampler state to checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


def pack_documents(documents: Iterable[Sequence[int]], eos_token_id: int) -> np.ndarray:
    """One flat int64 stream: every document's ids followed by EOS."""
    pieces: list[np.ndarray] = []
    eos = np.array([eos_token_id], dtype=np.int64)
    for ids in documents:
        pieces.append(np.asarray(ids, dtype=np.int64))
        pieces.append(eos)
    if not pieces:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(pieces)


@dataclass
class PackedDataset:
    """A token stream viewed as `num_sequences` rows of `seq_len` ids; `tail_tokens` ids after the last full row are
    not used (reported, never silently)."""

    tokens: np.ndarray
    seq_len: int
    _order_cache: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.seq_len <= 0:
            raise ValueError(f"seq_len must be positive, got {self.seq_len}")
        self.tokens = np.asarray(self.tokens, dtype=np.int64)

    @property
    def num_sequences(self) -> int:
        return len(self.tokens) // self.seq_len

    @property
    def tail_tokens(self) -> int:
        return len(self.tokens) - self.num_sequences * self.seq_len

    def rows(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The sequences at `indices` as a (len(indices), seq_len) int64 tensor."""
        index = np.asarray(indices, dtype=np.int64)
        starts = index[:, None] * self.seq_len + np.arange(self.seq_len)[None, :]
        return torch.from_numpy(self.tokens[starts] if len(index) else np.zeros((0, self.seq_len), dtype=np.int64))

    def epoch_order(self, seed: int, epoch: int) -> np.ndarray:
        """The permutation of sequence indices used in `epoch` (cached: a run needs the current and the next)."""
        key = (seed, epoch)
        if key not in self._order_cache:
            if len(self._order_cache) > 2:
                self._order_cache.clear()
            self._order_cache[key] = np.random.default_rng([seed, epoch]).permutation(self.num_sequences)
        return self._order_cache[key]

    def batch_indices(self, step: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """Sequence indices of this rank's share of the global batch of `step` (global batch = `batch_size` rows)."""
        if self.num_sequences < batch_size:
            raise ValueError(
                f"only {self.num_sequences} sequences of {self.seq_len} tokens, fewer than one batch of {batch_size}"
            )
        if batch_size % world_size:
            raise ValueError(f"batch_size ({batch_size}) must be divisible by the number of processes ({world_size})")
        start = step * batch_size
        positions = np.arange(start, start + batch_size)
        epochs, offsets = np.divmod(positions, self.num_sequences)
        chosen = np.array(
            [self.epoch_order(seed, int(e))[int(o)] for e, o in zip(epochs, offsets, strict=True)], dtype=np.int64
        )
        share = batch_size // world_size
        return chosen[rank * share : (rank + 1) * share]

    def poisson_indices(self, step: int, sample_rate: float, seed: int) -> np.ndarray:
        """DP-SGD's Poisson sampling: every sequence joins step `step`'s batch independently with `sample_rate`.

        Seeded by (seed, step), so a resumed DP run draws the same batches (the accountant assumes this sampling).
        """
        rng = np.random.default_rng([seed, 0x5D9, step])
        return np.flatnonzero(rng.random(self.num_sequences) < sample_rate)

    def fixed_batches(self, batch_size: int, num_batches: int) -> list[torch.Tensor]:
        """The first `num_batches` batches in stored order (validation: the same rows every evaluation)."""
        count = min(self.num_sequences, batch_size * num_batches)
        return [self.rows(np.arange(s, min(s + batch_size, count))) for s in range(0, count, batch_size)]
