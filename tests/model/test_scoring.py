"""Batched scoring equals one-at-a-time scoring; greedy flags and bits per byte are right."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.scoring import Request, bits_per_byte, make_batch, model_scorer, score_requests
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


def test_batched_scores_match_unbatched(public_model):
    requests = _requests()
    scores = score_requests(requests, model_scorer(public_model, "m"), batch_size=2, pad_id=IDS.pad_token_id)["m"]
    for index, request in enumerate(requests):
        loglik, greedy = _reference(public_model, request)
        assert scores.loglik[index] == pytest.approx(loglik, abs=1e-4)
        assert bool(scores.greedy[index]) == greedy
    assert (scores.context_nll[[0]] == 0).all()  # a 1-token context predicts nothing


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
