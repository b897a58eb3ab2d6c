"""Each baseline on tiny real models: the identities that pin them down; training changes only what it should."""

from __future__ import annotations

import copy

import pytest
import torch

from model.baselines import (
    EnsembleScorer,
    btm_logits,
    btx_merge,
    dense_as_expert,
    nearest_centroid,
    routing_weights,
    set_top_k,
    train_moe,
    uniform_soup,
    upcycle,
    weighted_soup,
)
from model.merge import merge_experts
from model.optout import keep_experts
from model.scoring import Request, model_scorer, score_requests
from tests.model.conftest import IDS, SIZES, random_row


def _perturbed(model, seed: int, scale: float = 0.05):
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return other.eval()


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch).logits


def test_soup_of_identical_models_is_the_model(public_model, batch):
    soup = uniform_soup([public_model, copy.deepcopy(public_model), copy.deepcopy(public_model)])
    torch.testing.assert_close(_logits(soup, batch), _logits(public_model, batch), rtol=0, atol=1e-5)


def test_soup_averages_parameters(public_model):
    other = _perturbed(public_model, 5)
    soup = uniform_soup([public_model, other])
    weighted = weighted_soup([public_model, other], [0.25, 0.75])
    name = "model.layers.0.mlp.up_proj.weight"
    a, b = public_model.state_dict()[name], other.state_dict()[name]
    torch.testing.assert_close(soup.state_dict()[name], (a + b) / 2)
    torch.testing.assert_close(weighted.state_dict()[name], 0.25 * a + 0.75 * b)
    with pytest.raises(ValueError):
        weighted_soup([public_model, other], [0.5, 0.6])


def _requests():
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(2, SIZES.vocab_size, (4, 12), generator=gen).tolist()
    return [Request(tuple(row[:5]), tuple(row[5:])) for row in ids]


def test_btm_with_one_model_is_that_model(public_model):
    requests = _requests()
    ensemble = EnsembleScorer([("pub", public_model)], temperature=1.0, top_k=2)
    scores = score_requests(requests, ensemble, batch_size=3, pad_id=IDS.pad_token_id)
    alone = score_requests(requests, model_scorer(public_model, "pub"), batch_size=3, pad_id=IDS.pad_token_id)["pub"]
    assert scores["btm"].loglik == pytest.approx(alone.loglik, abs=1e-6)
    assert scores["pub"].loglik == pytest.approx(alone.loglik, abs=1e-9)


def test_btm_follows_the_better_model(public_model):
    """With a sharp temperature BTM puts all weight on the model with the lower context NLL."""
    other = _perturbed(public_model, 6, scale=0.5)
    requests = _requests()
    scores = score_requests(requests, EnsembleScorer([("a", public_model), ("b", other)], 1e-6, None), 4, 0)
    better = scores["a"].context_nll < scores["b"].context_nll
    expected = [scores["a" if flag else "b"].loglik[i] for i, flag in enumerate(better)]
    assert scores["btm"].loglik == pytest.approx(expected, abs=1e-4)


def test_routing_weights_top_k():
    nll = torch.tensor([[1.0, 5.0], [2.0, 1.0], [3.0, 0.5]])
    w = routing_weights(nll, temperature=1.0, top_k=2)
    assert torch.allclose(w.sum(dim=0), torch.ones(2, dtype=torch.float64))
    assert w[2, 0] == 0 and w[0, 1] == 0
    full = torch.softmax(-nll[:2, 0].double(), dim=0)
    assert torch.allclose(w[:2, 0], full)


def test_flexolmo_with_only_public_is_public(public_model, batch):
    r_pub = random_row(7)
    alone = merge_experts(public_model, r_pub, [], top_k=1)
    torch.testing.assert_close(_logits(alone, batch), _logits(public_model, batch), rtol=0, atol=1e-5)
    expert = dense_as_expert(_perturbed(public_model, 8), r_pub, random_row(9))
    moe = merge_experts(public_model, r_pub, [expert, expert], top_k=2)
    torch.testing.assert_close(_logits(keep_experts(moe, [0]), batch), _logits(public_model, batch), rtol=0, atol=1e-5)


def test_btx_and_upcycle_of_identical_models_are_the_model(public_model, batch):
    rows = torch.stack([random_row(s) for s in (1, 2, 3)])
    btx = btx_merge(public_model, [copy.deepcopy(public_model), copy.deepcopy(public_model)], rows, top_k=3)
    torch.testing.assert_close(_logits(btx, batch), _logits(public_model, batch), rtol=0, atol=1e-5)
    up = upcycle(public_model, 3, rows, top_k=3)
    torch.testing.assert_close(_logits(up, batch), _logits(public_model, batch), rtol=0, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_router_changes_only_router(public_model, batch, precision):
    """In bf16 too: every step's forward sees the router the previous step updated (autocast caches the casts of
    trainable weights with no version check, so a context spanning steps would keep the first router and the loss
    flat)."""
    rows = torch.stack([random_row(s) for s in (1, 2)])
    moe = btx_merge(public_model, [_perturbed(public_model, 10)], rows, top_k=1)
    before = {k: v.clone() for k, v in moe.state_dict().items()}
    losses = train_moe(
        moe,
        [batch] * 6,
        lr=5e-2,
        weight_decay=0.0,
        grad_clip=1.0,
        train_experts=False,
        precision=precision,
        checkpoint_activations=False,
    )
    assert losses[-1] < losses[0] and len(set(losses)) == len(losses)
    changed = {k for k, v in moe.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.endswith("mlp.gate.weight") for k in changed)


def test_nearest_centroid_and_set_top_k(public_model):
    centroids = torch.eye(3)
    inputs = torch.tensor([[0.1, 0.9, 0.0], [2.0, 0.0, 0.1], [0.0, 0.2, -0.1]])
    assert nearest_centroid(inputs, centroids).tolist() == [1, 0, 1]
    moe = upcycle(public_model, 3, torch.stack([random_row(s) for s in (1, 2, 3)]), top_k=1)
    set_top_k(moe, 3)
    assert all(layer.mlp.gate.top_k == 3 for layer in moe.model.layers)
    with pytest.raises(ValueError):
        set_top_k(moe, 4)


def test_btm_routes_packed_choices_as_each_request_alone(public_model):
    """Choices that share a context share a row; BTM's per-example weights come from that context, so each request's
    ensemble score equals the one it gets in a row of its own."""
    # weights large enough that attention visibly mixes the values (at init scale it hardly changes a score)
    members = [("a", _perturbed(public_model, 5, scale=0.5)), ("b", _perturbed(public_model, 6, scale=0.5))]
    ensemble = EnsembleScorer(members, temperature=0.5, top_k=None)
    contexts = [row.context for row in _requests()[:2]]
    requests = [Request(context, target) for context in contexts for target in ((5, 6), (7, 8, 9), (10, 11))]
    requests.append(Request(tuple(range(2, 22)), (3,)))  # rows may be as wide as the widest request: 3 choices fit
    packed = score_requests(requests, ensemble, batch_size=6, pad_id=IDS.pad_token_id)
    for index, request in enumerate(requests):
        alone = score_requests([request], ensemble, batch_size=1, pad_id=IDS.pad_token_id)
        for name in ("a", "b", "btm"):
            assert packed[name].loglik[index] == pytest.approx(alone[name].loglik[0], abs=1e-4), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_btm_row_by_row_equals_the_whole_batch_sum(dtype) -> None:
    gen = torch.Generator().manual_seed(5)
    logits = [(torch.randn(4, 6, 40, generator=gen) * 3).to(dtype) for _ in range(3)]
    weights = routing_weights(torch.rand(3, 4, generator=gen) * 5, temperature=1.0)  # float64, as BTM routes
    whole = torch.zeros(4, 6, 40)
    for member, w in zip(logits, weights, strict=True):
        whole += member.to(torch.float32, copy=True).mul_(w.to(torch.float32)[:, None, None])
    assert torch.equal(btm_logits(logits, weights), whole)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_btm_top_k_reads_only_the_selected_members_and_sums_the_same(dtype) -> None:
    """Top-2 of 4 members: the mix equals the sum over every member (zero weights included) bit for bit, and a member
    no row selects is never read (NaN logits there would otherwise poison every row: 0 x NaN is NaN)."""
    gen = torch.Generator().manual_seed(6)
    logits = [(torch.randn(4, 6, 40, generator=gen) * 3).to(dtype) for _ in range(4)]
    nll = torch.rand(4, 4, generator=gen) * 5
    nll[3] += 100.0  # member 3: the worst context NLL on every row, never in a top 2
    weights = routing_weights(nll, temperature=1.0, top_k=2)
    assert (weights[3] == 0).all() and ((weights > 0).sum(dim=0) == 2).all()
    every_member = torch.zeros(4, 6, 40)
    for member, w in zip(logits, weights, strict=True):
        every_member += member.to(torch.float32, copy=True).mul_(w.to(torch.float32)[:, None, None])
    assert torch.equal(btm_logits(logits, weights), every_member)
    logits[3] = torch.full_like(logits[3], float("nan"))
    assert torch.equal(btm_logits(logits, weights), every_member)
