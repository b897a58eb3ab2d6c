"""Batched log-likelihood scoring: the one engine behind every FLEXMIX-small number.

Why one engine: every task reduces to lm-evaluation-harness's `loglikelihood` request, (context, continuation) ->
(sum of log p(continuation tokens | context), is_greedy). Bits per byte, multiple choice and greedy exact match are all
read off it, so every model (dense, soup, BTM ensemble, MoE) is compared through the same code. Exact match uses
`is_greedy`: greedy decoding reproduces the target iff every target token is the argmax at its position, which one
teacher-forced forward pass decides (no generation loop).

Everything is batched over requests and vectorised over tokens: no Python loop touches a token. Requests that share
a context (the choices of a multiple-choice item) share one row, so the context is run once per item (`Batch`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import PreTrainedModel


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
    """Right-padded rows of token ids, and where each request's target tokens sit in them.

    A row holds one context followed by the targets of every request in it (`make_packed_batch`): the requests of a
    multiple-choice item share their context, so it is run through the model once, not once per choice. Each target
    sees the context and its own earlier tokens, never another target (`attention`), and its positions restart where
    the context ends (`position_ids`), so a packed request scores as it would alone."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T) 1 on real tokens
    position_ids: torch.Tensor  # (B, T) each target's positions continue its context's
    attention: torch.Tensor | None  # (B, 1, T, T) True where a query may attend a key; None: plain causal + padding
    context_mask: torch.Tensor  # (B, T) True where the token belongs to the row's context
    target_mask: torch.Tensor  # (B, T) True where the token is a scored target token of some request
    target_rows: torch.Tensor  # (N,) per scored target token: its row
    target_predictors: torch.Tensor  # (N,) the position whose next-token distribution predicts it
    target_tokens: torch.Tensor  # (N,) its token id
    target_requests: torch.Tensor  # (N,) the request (index within the batch) it belongs to
    request_rows: torch.Tensor  # (R,) each request's row

    @property
    def n_requests(self) -> int:
        return int(self.request_rows.shape[0])

    def per_row(self, values: torch.Tensor) -> torch.Tensor:
        """A per-request quantity (..., R) that is the same for every request of a row (anything read off the shared
        context) as a per-row one (..., B)."""
        first = torch.searchsorted(self.request_rows, torch.arange(self.input_ids.shape[0], device=values.device))
        return values[..., first]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """The keywords a causal LM's forward takes for this batch (transformers uses a 4-D mask as given)."""
        mask = self.attention_mask if self.attention is None else self.attention
        return {"input_ids": self.input_ids, "attention_mask": mask, "position_ids": self.position_ids}


@dataclass
class Scores:
    """Per-request results, in request order."""

    loglik: np.ndarray  # float64, nats, sum over target tokens
    greedy: np.ndarray  # bool, every target token is the argmax
    context_nll: np.ndarray  # float64, nats, sum over predicted context tokens (routing baselines); NaN: not computed


CPU_CHUNK_POSITIONS = 256  # positions per chunk of the work over the vocabulary on a CPU (`batch_chunks`)
# model types whose causal-LM forward is exactly the LM head over the decoder's last hidden state (no logit scaling or
# soft-capping), so the head may run on chosen positions alone (`target_logits`; tests/model/test_scoring.py): every
# type flexo builds (OLMo-2, FlexOlmo) or hosts a pretrained anchor in (`model.hosts`: Llama, Mistral, Qwen2, Qwen2-MoE)
PLAIN_HEAD_MODEL_TYPES = frozenset({"olmo2", "flex_olmo", "llama", "mistral", "qwen2", "qwen2_moe"})

BatchScore = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (loglik (R,), greedy (R,), context_nll (R,))
Scorer = Callable[[Batch], Mapping[str, BatchScore]]


def make_batch(requests: Sequence[Request], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    """One row per request: context+target, right-padded to the longest."""
    return make_packed_batch([[request] for request in requests], pad_id, device)


def make_packed_batch(rows: Sequence[Sequence[Request]], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    """One row per group of requests that share a context: the context once, then each request's target. Requests are
    numbered in row order."""
    lengths = [_row_length(row) for row in rows]
    width = max(lengths)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)  # 0 context, j+1 the row's j-th target, -1 pad
    target_rows: list[torch.Tensor] = []
    predictors: list[torch.Tensor] = []
    tokens: list[torch.Tensor] = []
    owners: list[torch.Tensor] = []
    request_rows: list[int] = []
    for row_index, row in enumerate(rows):
        context = row[0].context
        if any(request.context != context for request in row):
            raise ValueError("the requests packed into one row must share their context")
        n_ctx = len(context)
        ids[row_index, :n_ctx] = torch.tensor(context, dtype=torch.long)
        positions[row_index, :n_ctx] = torch.arange(n_ctx)
        segment[row_index, :n_ctx] = 0
        start = n_ctx
        for j, request in enumerate(row):
            target = torch.tensor(request.target, dtype=torch.long)
            n_tgt = len(target)
            span = slice(start, start + n_tgt)
            ids[row_index, span] = target
            positions[row_index, span] = torch.arange(n_ctx, n_ctx + n_tgt)
            segment[row_index, span] = j + 1
            # the first target token is predicted from the context's last position, the others from the one before
            predictors.append(torch.tensor([n_ctx - 1, *range(start, start + n_tgt - 1)], dtype=torch.long))
            tokens.append(target)
            target_rows.append(torch.full((n_tgt,), row_index, dtype=torch.long))
            owners.append(torch.full((n_tgt,), len(request_rows), dtype=torch.long))
            request_rows.append(row_index)
            start += n_tgt
    real = segment >= 0
    attention = None
    if any(len(row) > 1 for row in rows):
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        keys, queries = segment[:, None, :], segment[:, :, None]
        # a key is visible if it is earlier or the same and in the context or the query's own target; padding queries
        # see the context (their outputs are never read; a row with no visible key would give NaNs)
        attention = (causal & ((keys == 0) | ((keys == queries) & (keys > 0))))[:, None]
    return Batch(
        input_ids=ids.to(device),
        attention_mask=real.long().to(device),
        position_ids=positions.to(device),
        attention=None if attention is None else attention.to(device),
        context_mask=(segment == 0).to(device),
        target_mask=(segment > 0).to(device),
        target_rows=torch.cat(target_rows).to(device),
        target_predictors=torch.cat(predictors).to(device),
        target_tokens=torch.cat(tokens).to(device),
        target_requests=torch.cat(owners).to(device),
        request_rows=torch.tensor(request_rows, dtype=torch.long).to(device),
    )


def _row_length(row: Sequence[Request]) -> int:
    return len(row[0].context) + sum(len(request.target) for request in row)


def pack_rows(requests: Sequence[Request], max_tokens: int) -> list[list[int]]:
    """Request indices grouped into rows: requests with the same context share a row while its length stays within
    `max_tokens` (a request longer than that gets a row of its own). Order: first appearance of each context."""
    rows: list[list[int]] = []
    open_row: dict[tuple[int, ...], tuple[int, int]] = {}  # context -> (index in rows, tokens so far)
    for index, request in enumerate(requests):
        found = open_row.get(request.context)
        if found is not None and found[1] + len(request.target) <= max_tokens:
            rows[found[0]].append(index)
            open_row[request.context] = (found[0], found[1] + len(request.target))
            continue
        rows.append([index])
        open_row[request.context] = (len(rows) - 1, len(request.context) + len(request.target))
    return rows


def reduce_logprobs(logprobs: torch.Tensor, batch: Batch) -> BatchScore:
    """(loglik, greedy, context_nll) per request from next-token log-probabilities (B, T, V) of one batch.

    Each target token's log-probability is read where it sits and the argmax is taken in place, over every position:
    8.5-9.3 ms on a CPU for a (16, 150, 8192) batch, where copying the predicting positions' rows out first (N x V)
    took 1.1 ms when 7% of the positions predict a target and 18-25 ms from half of them on (benchmarks/RESULTS.md)."""
    token_ll = logprobs[batch.target_rows, batch.target_predictors, batch.target_tokens]
    best = logprobs.argmax(dim=-1)[batch.target_rows, batch.target_predictors]
    loglik, greedy = _per_request(token_ll, best, batch)
    # the context is a prefix of its row: position t predicts token t+1 there as in any causal pass
    following = batch.input_ids[:, 1:]
    context_ll = logprobs[:, :-1].gather(-1, following.unsqueeze(-1)).squeeze(-1).double()
    row_context_nll = -(context_ll * batch.context_mask[:, 1:]).sum(dim=1)
    return loglik, greedy, row_context_nll[batch.request_rows]


def reduce_target_logits(logits: torch.Tensor, batch: Batch) -> BatchScore:
    """(loglik, greedy, NaN context NLL) per request from the logits at the positions that predict a target token
    (N, V), in `batch.target_*` order: the log-softmax, the target's log-probability and the argmax per
    `batch_chunks` of them (on a CPU a few hundred positions at a time, which stay in the cache)."""
    token_ll, best = [], []
    for chunk, tokens in batch_chunks(logits, batch.target_tokens):
        logprobs = token_logprobs(chunk)
        token_ll.append(logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1))
        best.append(logprobs.argmax(dim=-1))
    loglik, greedy = _per_request(torch.cat(token_ll), torch.cat(best), batch)
    return loglik, greedy, torch.full_like(loglik, math.nan)


def _per_request(token_ll: torch.Tensor, best: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Each target token's log-probability (N,) and its position's argmax (N,) summed into each request's loglik and
    greedy flag (R,)."""
    loglik = torch.zeros(batch.n_requests, dtype=torch.float64, device=token_ll.device)
    loglik.index_add_(0, batch.target_requests, token_ll.double())
    missed = torch.zeros(batch.n_requests, dtype=torch.long, device=token_ll.device)
    missed.index_add_(0, batch.target_requests, (best != batch.target_tokens).long())
    return loglik, missed == 0


def token_logprobs(logits: torch.Tensor) -> torch.Tensor:
    """log softmax in fp32 (scores are compared across models: one precision for all), over `batch_chunks` (on a CPU
    a cache-sized chunk of rows at a time: the same numbers, 1.8x faster there than over the whole batch); a 2-D input
    (already a chunk) and wherever autograd records, in one op (out= has no gradient)."""
    if logits.dim() < 3 or (logits.requires_grad and torch.is_grad_enabled()):
        return F.log_softmax(logits.float(), dim=-1)
    out = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    for chunk, chunk_out in batch_chunks(logits, out):
        torch.log_softmax(chunk.float(), dim=-1, out=chunk_out)
    return out


def batch_chunks(*tensors: torch.Tensor) -> Iterator[tuple[torch.Tensor, ...]]:
    """The tensors' leading rows side by side, in chunks: on a CPU as many rows as hold `CPU_CHUNK_POSITIONS`
    positions (one batch row of logits (T, V), or a few hundred predicting positions' (V,) rows), the whole batch
    elsewhere. Why chunks on a CPU: an elementwise op over a whole batch of logits (B x T x V, tens of MB) streams it
    through memory once per op, while a chunk stays in the cache from its fp32 copy to its last op; an accelerator wants
    one kernel per op instead. Chunked or not, the ops on each row are the same, so are their results."""
    first = tensors[0]
    if first.device.type != "cpu":
        size = max(first.shape[0], 1)
    else:
        positions_per_row = math.prod(first.shape[1:-1])  # 1 for (N, V) rows
        size = max(1, CPU_CHUNK_POSITIONS // max(positions_per_row, 1))
    return zip(*(t.split(size) for t in tensors), strict=True)


def target_logits(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """The causal LM's next-token logits at the positions that predict a target token (N, V), in `batch.target_*`
    order. Why not the forward's (B, T, V): the LM head (hidden x vocabulary, a third of a demo dense model's forward
    FLOPs) and everything over the vocabulary after it are then computed only where a score reads them. Where the
    model type's forward is not known to be the plain head over the decoder's output (`PLAIN_HEAD_MODEL_TYPES`), the
    rows are picked out of the forward's logits."""
    if getattr(model.config, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES:
        logits = model(**batch.model_inputs(), use_cache=False).logits
        return logits[batch.target_rows, batch.target_predictors]
    causal_lm = cast("PreTrainedModel", model)  # a transformers causal LM: its model type is one of those
    hidden = causal_lm.get_decoder()(**batch.model_inputs(), use_cache=False).last_hidden_state
    return causal_lm.get_output_embeddings()(hidden[batch.target_rows, batch.target_predictors])


def model_scorer(model: torch.nn.Module, name: str) -> Scorer:
    """A scorer for one causal LM (dense or MoE), from its logits where a target is predicted (`target_logits`). Its
    context NLL is NaN: only the combining baselines' members' is read (routing), and `EnsembleScorer` computes it."""

    def score(batch: Batch) -> dict[str, BatchScore]:
        return {name: reduce_target_logits(target_logits(model, batch), batch)}

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
    widest = max(len(r.context) + len(r.target) for r in requests)  # packing never makes a row wider than this
    rows = sorted(pack_rows(requests, widest), key=lambda row: -_row_length([requests[i] for i in row]))
    collected: dict[str, list[tuple[list[int], BatchScore]]] = {}
    for batch_rows in _batches_of(rows, batch_size):
        chunk = [i for row in batch_rows for i in row]
        batch = make_packed_batch([[requests[i] for i in row] for row in batch_rows], pad_id, device)
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


def _batches_of(rows: Sequence[list[int]], batch_size: int) -> Iterator[list[list[int]]]:
    """Consecutive rows, at most `batch_size` requests per batch (a row of more requests goes alone): as many
    requests as an unpacked batch, in fewer tokens."""
    batch: list[list[int]] = []
    for row in rows:
        if batch and sum(map(len, batch)) + len(row) > batch_size:
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


def bits_per_byte(loglik_nats: np.ndarray | float, n_bytes: np.ndarray | float) -> float:
    """Total negative log-likelihood in bits over total UTF-8 bytes: tokenizer-independent."""
    total_bytes = float(np.sum(n_bytes))
    if total_bytes <= 0:
        raise ValueError("bits per byte over zero bytes")
    return float(-np.sum(loglik_nats) / (math.log(2) * total_bytes))
