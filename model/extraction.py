"""The data-extraction attack of FlexOlmo §5.3, as pure torch/transformers: probes, batched sampling, similarity.

Protocol (the paper's code, `extraction_analysis.py`): from a training document take a random window of `window_tokens`
tokens; its first `prefix_tokens` tokens are the prompt; sample `samples_per_prefix` continuations of the rest of the
window (top-k / top-p / temperature); the document is *extracted* if any sample's normalised Levenshtein similarity
(characters) to the true window reaches the threshold. The paper compares prefix+continuation with the whole window, so
the shared prefix inflates the score (by about prefix/window); we report that number and the honest one (continuation vs
the true rest).

Sampling is batched: all samples of a chunk of prefixes go through one `generate` call with the KV cache on, since every
prefix has the same length (no padding). The calibration helper `memorize` overfits a model on a few windows, the
paper's sanity check that the attack can detect memorisation at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from rapidfuzz.distance import Levenshtein
from transformers import GenerationMixin, PreTrainedModel


@dataclass(frozen=True)
class SamplingSettings:
    """How continuations are sampled (mirrors `tasks.core.config.AttackConfig`)."""

    prefix_tokens: int
    window_tokens: int  # prefix included, as the paper's `max_length`
    samples_per_prefix: int
    top_k: int
    top_p: float
    temperature: float
    batch_prefixes: int  # prefixes per `generate` call (each expands to samples_per_prefix rows)

    def __post_init__(self) -> None:
        if self.window_tokens <= self.prefix_tokens:
            raise ValueError(
                f"window_tokens ({self.window_tokens}) must exceed prefix_tokens ({self.prefix_tokens}): "
                "the window includes the prefix"
            )
        if min(self.prefix_tokens, self.samples_per_prefix, self.top_k, self.batch_prefixes) < 1:
            raise ValueError("prefix_tokens, samples_per_prefix, top_k and batch_prefixes must be >= 1")

    @property
    def new_tokens(self) -> int:
        return self.window_tokens - self.prefix_tokens


@dataclass(frozen=True)
class Probe:
    """One attacked document: which one, where its window starts, and the true window's token ids."""

    doc_index: int
    offset: int
    window: tuple[int, ...]


@dataclass(frozen=True)
class DocScore:
    """The best sample for one probe, scored with and without the shared prefix."""

    doc_index: int
    offset: int
    best_with_prefix: float
    best_without_prefix: float
    best_sample: str  # the continuation text of the sample with the highest similarity (without prefix)


@dataclass(frozen=True)
class ExtractionResult:
    """Per-document scores and the rates derived from them at `threshold`."""

    threshold: float
    scores: list[DocScore] = field(default_factory=list)

    @property
    def num_docs(self) -> int:
        return len(self.scores)

    def extracted(self, with_prefix: bool) -> int:
        key = "best_with_prefix" if with_prefix else "best_without_prefix"
        return sum(getattr(s, key) >= self.threshold for s in self.scores)

    def rate(self, with_prefix: bool) -> float:
        return self.extracted(with_prefix) / self.num_docs if self.scores else 0.0

    def mean_best(self, with_prefix: bool) -> float:
        key = "best_with_prefix" if with_prefix else "best_without_prefix"
        return float(np.mean([getattr(s, key) for s in self.scores])) if self.scores else 0.0


def make_probes(docs: Sequence[Sequence[int]], window_tokens: int, seed: int) -> tuple[list[Probe], list[int]]:
    """A random window of every document long enough; returns (probes, indices of documents too short to attack)."""
    rng = np.random.default_rng(seed)
    probes, too_short = [], []
    for index, tokens in enumerate(docs):
        if len(tokens) < window_tokens:
            too_short.append(index)
            continue
        offset = int(rng.integers(0, len(tokens) - window_tokens + 1))
        probes.append(Probe(index, offset, tuple(int(t) for t in tokens[offset : offset + window_tokens])))
    return probes, too_short


def similarity(candidate: str, reference: str) -> float:
    """Normalised Levenshtein similarity on characters, 1 - distance / max(len) (strsimpy's definition; rapidfuzz)."""
    return float(Levenshtein.normalized_similarity(candidate, reference))


@torch.no_grad()
def sample_continuations(
    model: PreTrainedModel,
    prefixes: torch.Tensor,
    settings: SamplingSettings,
    seed: int,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """(N, P) prefixes -> (N, samples, new_tokens) sampled ids; rows that hit EOS early are padded with the pad id."""
    if prefixes.ndim != 2 or prefixes.shape[1] != settings.prefix_tokens:
        raise ValueError(f"prefixes must have shape (N, {settings.prefix_tokens}), got {tuple(prefixes.shape)}")
    if not isinstance(model, GenerationMixin):
        raise TypeError(f"{type(model).__name__} cannot generate: sampling needs a causal LM")
    config = model.config
    pad_id = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, prefixes.shape[0], settings.batch_prefixes):
            chunk = prefixes[start : start + settings.batch_prefixes].to(device)
            # transformers types generate's `self` as a Protocol its own models do not satisfy under mypy
            out = model.generate(  # type: ignore[misc]
                input_ids=chunk,
                attention_mask=torch.ones_like(chunk),
                do_sample=True,
                top_k=settings.top_k,
                top_p=settings.top_p,
                temperature=settings.temperature,
                num_return_sequences=settings.samples_per_prefix,
                max_new_tokens=settings.new_tokens,
                use_cache=True,
                pad_token_id=pad_id,
                eos_token_id=config.eos_token_id,
            )
            new = out[:, settings.prefix_tokens :]
            if new.shape[1] < settings.new_tokens:  # every row stopped at EOS before the window's end
                filler = torch.full(
                    (new.shape[0], settings.new_tokens - new.shape[1]), pad_id, dtype=new.dtype, device=new.device
                )
                new = torch.cat([new, filler], dim=1)
            chunks.append(new.reshape(chunk.shape[0], settings.samples_per_prefix, settings.new_tokens).cpu())
            if on_batch is not None:
                on_batch(chunk.shape[0])
    model.train(was_training)
    return torch.cat(chunks, dim=0)


def _until_eos(ids: Sequence[int], eos_id: int | None) -> list[int]:
    ids = list(ids)
    return ids[: ids.index(eos_id)] if eos_id is not None and eos_id in ids else ids


def score_probe(
    probe: Probe,
    samples: torch.Tensor,
    prefix_tokens: int,
    decode: Callable[[list[int]], str],
    eos_token_id: int | None,
) -> DocScore:
    """The best similarity over one probe's samples (S, new_tokens), with and without the shared prefix."""
    prefix = list(probe.window[:prefix_tokens])
    reference_full = decode(list(probe.window))
    reference_rest = decode(list(probe.window[prefix_tokens:]))
    best_with, best_without, best_text = 0.0, 0.0, ""
    for row in samples.tolist():
        continuation = _until_eos(row, eos_token_id)
        text = decode(continuation)
        best_with = max(best_with, similarity(decode(prefix + continuation), reference_full))
        score = similarity(text, reference_rest)
        if score >= best_without:
            best_without, best_text = score, text
    return DocScore(probe.doc_index, probe.offset, best_with, best_without, best_text)


def extraction_attack(
    model: PreTrainedModel,
    probes: Sequence[Probe],
    decode: Callable[[list[int]], str],
    settings: SamplingSettings,
    threshold: float,
    seed: int,
    on_batch: Callable[[int], None] | None = None,
) -> ExtractionResult:
    """Run the whole attack on one model: sample every probe's continuations and score them."""
    if not probes:
        raise ValueError("no probes to attack: every document was shorter than the window")
    prefixes = torch.tensor([p.window[: settings.prefix_tokens] for p in probes], dtype=torch.long)
    samples = sample_continuations(model, prefixes, settings, seed, on_batch)
    eos = model.config.eos_token_id
    scores = [score_probe(p, samples[i], settings.prefix_tokens, decode, eos) for i, p in enumerate(probes)]
    return ExtractionResult(threshold=threshold, scores=scores)


def memorize(
    model: PreTrainedModel,
    windows: torch.Tensor,
    epochs: int,
    lr: float,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> float:
    """Overfit all parameters on `windows` (N, T) for `epochs` full-batch Adam steps; returns the last loss.

    The calibration model: if the attack cannot extract what this model has memorised, the attack is broken.
    """
    device = next(model.parameters()).device
    batch = windows.to(device)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    loss_value = float("nan")
    try:
        for epoch in range(epochs):
            optimizer.zero_grad(set_to_none=True)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            loss_value = float(loss.detach())
            if on_epoch is not None:
                on_epoch(epoch, loss_value)
    finally:
        torch.random.set_rng_state(generator_state)
        model.eval()
    return loss_value
