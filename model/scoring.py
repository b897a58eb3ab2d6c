"""Batched log-likelihood scoring: the one engine behind every FLEXMIX-small number.

Why one engine: every task reduces to lm-evaluation-harness's `loglikelihood` request, (context, continuation) ->
(sum of log p(continuation tokens | context), is_greedy). Bits per byte, multiple choice and greedy exact match are all
read off it, so every model (dense, soup, BTM ensemble, MoE) is compared through the same code. Exact match uses
`is_greedy`: greedy decoding reproduces the target iff every target token is the argmax at its position, which one
teacher-forced forward pass decides (no generation loop).

Everything is batched over requests and vectorised over tokens: no Python loop touches a token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Request:
    """One loglikelihood request: token ids of the context and of the continuation that is scored."""

    context: tuple[int, ...]
    target: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.target:
            raise ValueError("a request needs at least one target token")
        if not self.context:
            raise ValueError("a request needs at least one context token (the first token is never predicted)")


@dataclass
class Batch:
    """Right-padded token ids with masks over the positions of context and target tokens."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T) 1 on real tokens
    context_mask: torch.Tensor  # (B, T) True where the token belongs to the context
    target_mask: torch.Tensor  # (B, T) True where the token is a scored target token


@dataclass
class Scores:
    """Per-request results, in request order."""

    loglik: np.ndarray  # float64, nats, sum over target tokens
    greedy: np.ndarray  # bool, every target token is the argmax
    context_nll: np.ndarray  # float64, nats, sum over predicted context tokens (for routing baselines)


BatchScore = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (loglik (B,), greedy (B,), context_nll (B,))
Scorer = Callable[[Batch], Mapping[str, BatchScore]]


def make_batch(requests: Sequence[Request], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    """Concatenate context+target per request and right-pad to the longest."""
    lengths = [len(r.context) + len(r.target) for r in requests]
    width = max(lengths)
    ids = torch.full((len(requests), width), pad_id, dtype=torch.long)
    context = torch.zeros((len(requests), width), dtype=torch.bool)
    target = torch.zeros((len(requests), width), dtype=torch.bool)
    for row, request in enumerate(requests):
        n_ctx, n_all = len(request.context), lengths[row]
        ids[row, :n_all] = torch.tensor(request.context + request.target, dtype=torch.long)
        context[row, :n_ctx] = True
        target[row, n_ctx:n_all] = True
    attention = (context | target).long()
    return Batch(ids.to(device), attention.to(device), context.to(device), target.to(device))


def reduce_logprobs(logprobs: torch.Tensor, batch: Batch) -> BatchScore:
    """(loglik, greedy, context_nll) from next-token log-probabilities (B, T, V) of one batch."""
    predicted = logprobs[:, :-1]
    following = batch.input_ids[:, 1:]
    token_ll = predicted.gather(-1, following.unsqueeze(-1)).squeeze(-1).double()
    target = batch.target_mask[:, 1:]
    context = batch.context_mask[:, 1:]
    loglik = (token_ll * target).sum(dim=1)
    hits = predicted.argmax(dim=-1) == following
    greedy = (hits | ~target).all(dim=1)
    context_nll = -(token_ll * context).sum(dim=1)
    return loglik, greedy, context_nll


def token_logprobs(logits: torch.Tensor) -> torch.Tensor:
    """log softmax in fp32 (scores are compared across models: one precision for all)."""
    return F.log_softmax(logits.float(), dim=-1)


def model_scorer(model: torch.nn.Module, name: str) -> Scorer:
    """A scorer for one causal LM (dense or MoE)."""

    def score(batch: Batch) -> dict[str, BatchScore]:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        return {name: reduce_logprobs(token_logprobs(logits), batch)}

    return score


@torch.no_grad()
def score_requests(
    requests: Sequence[Request],
    scorer: Scorer,
    batch_size: int,
    pad_id: int,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Scores]:
    """Run `scorer` over all requests in length-sorted batches; results come back in request order, one entry per name
    the scorer reports (an ensemble scorer reports its members and the ensemble from one pass)."""
    if not requests:
        raise ValueError("no requests to score")
    order = sorted(range(len(requests)), key=lambda i: -(len(requests[i].context) + len(requests[i].target)))
    collected: dict[str, list[tuple[list[int], BatchScore]]] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = make_batch([requests[i] for i in chunk], pad_id, device)
        for name, result in scorer(batch).items():
            ll, gr, cn = result
            on_cpu = (ll.detach().cpu(), gr.detach().cpu(), cn.detach().cpu())
            collected.setdefault(name, []).append((chunk, on_cpu))
        if on_batch is not None:
            on_batch(len(chunk))
    out: dict[str, Scores] = {}
    for name, parts in collected.items():
        loglik = np.zeros(len(requests), dtype=np.float64)
        greedy = np.zeros(len(requests), dtype=bool)
        context_nll = np.zeros(len(requests), dtype=np.float64)
        for chunk, (ll, gr, cn) in parts:
            loglik[chunk] = ll.numpy()
            greedy[chunk] = gr.numpy()
            context_nll[chunk] = cn.numpy()
        out[name] = Scores(loglik, greedy, context_nll)
    return out


def bits_per_byte(loglik_nats: np.ndarray | float, n_bytes: np.ndarray | float) -> float:
    """Total negative log-likelihood in bits over total UTF-8 bytes: tokenizer-independent."""
    total_bytes = float(np.sum(n_bytes))
    if total_bytes <= 0:
        raise ValueError("bits per byte over zero bytes")
    return float(-np.sum(loglik_nats) / (math.log(2) * total_bytes))
