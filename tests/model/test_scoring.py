"""Batched scoring equals one-at-a-time scoring; greedy flags and bits per byte are right."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.scoring import (
    PLAIN_HEAD_MODEL_TYPES,
    Batch,
    Request,
    Scorer,
    Scores,
    batch_chunks,
    bits_per_byte,
    make_batch,
    make_packed_batch,
    model_scorer,
    pack_rows,
    reduce_logprobs,
    reduce_target_logits,
    score_requests,
    target_logits,
    token_logprobs,
)
from tests.model.conftest import IDS, SIZES


def _requests() -> list[Request]:
    gen = torch.Generator().manual_seed(3)
    out = []
    for n_ctx, n_tgt in [(1, 3), (5, 1), (9, 6), (3, 12), (2, 2)]:
        ids = torch.randint(2, SIZES.vocab_size, (n_ctx + n_tgt,), generator=gen).tolist()
        out.append(Request(tuple(ids[:n_ctx]), tuple(ids[n_ctx:])))
    return out


def _reference(model, request: Request) -> tuple[float, bool]:
    ids = torch.tensor([request.context + request.target])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0]
    total, greedy = 0.0, True
    for position in range(len(request.context), ids.shape[1]):
        token = int(ids[0, position])
        total += float(logprobs[position - 1, token])
        greedy &= int(logprobs[position - 1].argmax()) == token
    return total, greedy


def _whole_logits_scorer(model) -> Scorer:
    """A scorer from the whole logits (B, T, V), as the ensemble's members are scored: with the context NLL."""
    return lambda batch: {"m": reduce_logprobs(token_logprobs(model(**batch.model_inputs()).logits), batch)}


def _scored_as_alone(model, requests: list[Request], batch_size: int, scorer: Scorer | None = None) -> Scores:
    """Batched scores, checked against each request's one-at-a-time reference."""
    scorer = scorer or model_scorer(model, "m")
    scores = score_requests(requests, scorer, batch_size=batch_size, pad_id=IDS.pad_token_id)["m"]
    for index, request in enumerate(requests):
        loglik, greedy = _reference(model, request)
        assert scores.loglik[index] == pytest.approx(loglik, abs=1e-4)
        assert bool(scores.greedy[index]) == greedy
    return scores


def test_batched_scores_match_unbatched(public_model):
    assert np.isnan(_scored_as_alone(public_model, _requests(), batch_size=2).context_nll).all()  # not computed
    scores = _scored_as_alone(public_model, _requests(), batch_size=2, scorer=_whole_logits_scorer(public_model))
    assert (scores.context_nll[[0]] == 0).all()  # a 1-token context predicts nothing
    assert (scores.context_nll[1:] > 0).all()


def test_greedy_flag_is_exact(public_model):
    context = (5, 9, 11)
    ids = torch.tensor([context])
    with torch.no_grad():
        greedy_ids = public_model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)[0, 3:].tolist()
    good = Request(context, tuple(greedy_ids))
    wrong_token = (greedy_ids[-1] + 1) % SIZES.vocab_size
    bad = Request(context, tuple(greedy_ids[:-1] + [wrong_token]))
    scores = score_requests([good, bad], model_scorer(public_model, "m"), batch_size=4, pad_id=0)["m"]
    assert scores.greedy.tolist() == [True, False]


def test_make_batch_masks():
    batch = make_batch([Request((1, 2), (3,)), Request((4,), (5, 6, 7))], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 0], [4, 5, 6, 7]]
    assert batch.context_mask.tolist() == [[True, True, False, False], [True, False, False, False]]
    assert batch.target_mask.tolist() == [[False, False, True, False], [False, True, True, True]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def test_bits_per_byte():
    assert bits_per_byte(np.array([-math.log(2) * 8]), np.array([4])) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        bits_per_byte(np.array([-1.0]), np.array([0]))


def test_request_needs_tokens():
    with pytest.raises(ValueError):
        Request((), (1,))
    with pytest.raises(ValueError):
        Request((1,), ())


def _choices() -> list[Request]:
    """Multiple-choice-like requests: three items of 2-4 choices each sharing their item's context, interleaved with
    requests of their own context, in no particular order."""
    gen = torch.Generator().manual_seed(5)

    def ids(n: int) -> tuple[int, ...]:
        return tuple(torch.randint(2, SIZES.vocab_size, (n,), generator=gen).tolist())

    items = [
        (ids(7), [ids(2), ids(5), ids(1)]),
        (ids(3), [ids(4), ids(4)]),
        (ids(11), [ids(1), ids(3), ids(2), ids(6)]),
    ]
    requests = [Request(context, target) for context, targets in items for target in targets]
    requests.insert(2, Request(ids(4), ids(3)))
    requests.insert(6, Request(ids(1), ids(9)))
    return requests


def test_requests_sharing_a_context_share_a_row():
    requests = _choices()
    rows = pack_rows(requests, max_tokens=100)
    assert sorted(i for row in rows for i in row) == list(range(len(requests)))
    assert len(rows) == 5
    for row in rows:
        assert len({requests[i].context for i in row}) == 1
    tight = pack_rows(requests, max_tokens=14)  # the 11-token context and its targets of 1, 3, 2, 6 tokens
    assert [
        len(requests[i].context) + sum(len(requests[j].target) for j in row) <= 14 for row in tight for i in row[:1]
    ]
    assert len(tight) > len(rows)
    with pytest.raises(ValueError, match="share their context"):
        make_packed_batch([[Request((1, 2), (3,)), Request((1, 4), (3,))]], pad_id=0)


def test_packed_masks_let_each_target_see_the_context_and_itself_only():
    batch = make_packed_batch([[Request((1, 2), (3,)), Request((1, 2), (4, 5))]], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 2, 3]]
    assert batch.attention[0, 0].long().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 0, 1, 0],
        [1, 1, 0, 1, 1],
    ]
    assert batch.target_predictors.tolist() == [1, 1, 3] and batch.target_requests.tolist() == [0, 1, 1]
    assert batch.per_row(torch.tensor([7.0, 7.0])).tolist() == [7.0]


def test_packed_scores_match_each_request_alone(public_model):
    requests = _choices()
    _scored_as_alone(public_model, requests, batch_size=4)
    whole = _whole_logits_scorer(public_model)
    scores = _scored_as_alone(public_model, requests, batch_size=4, scorer=whole)
    for index, request in enumerate(requests):
        alone = score_requests([request], whole, batch_size=1, pad_id=0)["m"]
        assert scores.context_nll[index] == pytest.approx(alone.context_nll[0], abs=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_log_softmax_row_by_row_equals_the_whole_batch(dtype) -> None:
    logits = (torch.randn(3, 7, 50, generator=torch.Generator().manual_seed(0)) * 4).to(dtype)
    assert torch.equal(token_logprobs(logits), torch.nn.functional.log_softmax(logits.float(), dim=-1))
    assert torch.equal(token_logprobs(logits[0]), torch.nn.functional.log_softmax(logits[0].float(), dim=-1))


def test_log_softmax_under_autograd_keeps_its_graph() -> None:
    logits = torch.randn(2, 5, 30, generator=torch.Generator().manual_seed(2), requires_grad=True)
    token_logprobs(logits)[0, -1, 3].backward()
    assert logits.grad is not None and logits.grad[0, -1].abs().sum() > 0 and not logits.grad[1].any()


def test_scores_read_in_place_equal_those_of_the_copied_rows() -> None:
    """Target log-probabilities read where they sit and the argmax over every position give what copying the
    predicting positions' rows out gave, ties included (the first maximum wins either way)."""
    batch = make_packed_batch([[r] for r in _requests()], pad_id=0)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(*batch.input_ids.shape, SIZES.vocab_size, generator=gen).to(torch.bfloat16)  # bf16: ties
    logprobs = token_logprobs(logits)
    logprobs[batch.target_rows[0], batch.target_predictors[0], :2] = 0.0  # a tie at the top: index 0 is the argmax
    loglik, greedy, context_nll = reduce_logprobs(logprobs, batch)
    predicted = logprobs[batch.target_rows, batch.target_predictors]  # the copy the scores were read from before
    token_ll = predicted.gather(-1, batch.target_tokens.unsqueeze(-1)).squeeze(-1).double()
    misses = (predicted.argmax(dim=-1) != batch.target_tokens).long()
    want_ll = torch.zeros(batch.n_requests, dtype=torch.float64).index_add_(0, batch.target_requests, token_ll)
    want_missed = torch.zeros(batch.n_requests, dtype=torch.long).index_add_(0, batch.target_requests, misses)
    assert torch.equal(loglik, want_ll) and torch.equal(greedy, want_missed == 0)
    assert context_nll.shape == (batch.n_requests,)


def _packed(requests: list[Request]) -> Batch:
    rows = pack_rows(requests, max_tokens=32)
    return make_packed_batch([[requests[i] for i in row] for row in rows], IDS.pad_token_id)


def _upcycled(dense):
    """A 3-expert MoE of `dense`'s family (FlexOlmo for OLMo-2, Qwen2-MoE for a hosted anchor) whose experts differ,
    so routing matters."""
    from model.baselines import upcycle
    from tests.model.conftest import random_row

    moe = upcycle(dense, 3, torch.stack([random_row(s) for s in (1, 2, 3)]), top_k=2)
    with torch.no_grad():
        for name, parameter in moe.named_parameters():
            if "experts" in name:
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(4)))
    return moe.eval()


def _gpt2(public_model):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=SIZES.vocab_size, n_embd=SIZES.hidden_size, n_layer=1, n_head=SIZES.num_heads)
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval()


def _anchor(family: str, moe: bool = False):
    """A tiny anchor of a hosted family (tests/model/test_hosts.py), or its MoE."""
    from tests.model.test_hosts import FAMILIES

    torch.manual_seed(0)
    dense = FAMILIES[family]().eval()
    return _upcycled(dense) if moe else dense


BUILDS = {
    "olmo2": lambda public: public,
    "flex_olmo": _upcycled,
    "llama": lambda _: _anchor("llama"),
    "mistral": lambda _: _anchor("mistral"),
    "qwen2": lambda _: _anchor("qwen2"),
    "qwen2_moe": lambda _: _anchor("llama", moe=True),
    "gpt2": _gpt2,
}


@pytest.mark.parametrize("model_type", sorted(BUILDS))
def test_target_logits_are_the_forwards_at_the_predicting_positions(public_model, model_type: str) -> None:
    """The head run over the predicting positions alone gives the forward's logits there, for every model type the
    shortcut is allowed for; any other type (GPT-2 here) has them picked out of the whole forward."""
    model = BUILDS[model_type](public_model)
    assert model.config.model_type == model_type
    assert (model_type in PLAIN_HEAD_MODEL_TYPES) == (model_type != "gpt2")
    assert PLAIN_HEAD_MODEL_TYPES <= set(BUILDS)  # every type the shortcut is allowed for is checked here
    for batch in (make_batch(_requests(), IDS.pad_token_id), _packed(_choices())):
        if model_type == "gpt2" and batch.attention is not None:
            continue  # GPT-2 takes no 4-D mask
        with torch.no_grad():
            whole = model(**batch.model_inputs(), use_cache=False).logits
            picked = target_logits(model, batch)
        assert picked.shape == (len(batch.target_tokens), SIZES.vocab_size)
        torch.testing.assert_close(picked, whole[batch.target_rows, batch.target_predictors], rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scores_from_the_predicting_rows_equal_those_from_the_whole_logits(dtype) -> None:
    """`reduce_target_logits` on the predicting positions' rows gives exactly what `reduce_logprobs` reads off the
    whole batch's log-probabilities, ties at the top included; its context NLL is NaN (not computed)."""
    batch = _packed(_requests() + _choices())
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(*batch.input_ids.shape, SIZES.vocab_size, generator=gen) * 3).to(dtype)
    logits[batch.target_rows[0], batch.target_predictors[0], :2] = logits.max()  # a tie at the top
    want_ll, want_greedy, _ = reduce_logprobs(token_logprobs(logits), batch)
    loglik, greedy, context_nll = reduce_target_logits(logits[batch.target_rows, batch.target_predictors], batch)
    assert torch.equal(loglik, want_ll) and torch.equal(greedy, want_greedy)
    assert torch.isnan(context_nll).all() and context_nll.shape == (batch.n_requests,)


def test_cpu_chunks_hold_a_few_hundred_positions() -> None:
    rows = torch.zeros(1000, 8)
    assert [len(c) for c, _ in batch_chunks(rows, torch.zeros(1000))] == [256, 256, 256, 232]
    assert [len(c) for (c,) in batch_chunks(torch.zeros(5, 100, 8))] == [2, 2, 1]
    assert [len(c) for (c,) in batch_chunks(torch.zeros(3, 300, 8))] == [1, 1, 1]
