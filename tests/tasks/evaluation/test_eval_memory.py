"""The evaluation's memory savings change no number: activation checkpointing in the baselines' router training, the
ensemble keeping its members' logits as the models return them, and handing freed memory back to the OS.

Each is checked against the plain definition it replaced (no checkpointing; fp32 copies of every member's logits), on
real tiny models and on a whole tiny-world evaluation, in bf16 autocast (where the dtype matters) and fp32.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from collections.abc import Callable, Iterable

import numpy as np
import pytest
import torch
from transformers import Olmo2ForCausalLM

from model import baselines
from model.baselines import EnsembleScorer, routing_weights, train_moe, upcycle
from model.config import ModelSizes, TokenizerIds
from model.hosts import MoEModel
from model.memory import current_rss_gib, release_freed_memory, trim_heap
from model.precision import Precision, autocast
from model.public import build_public_model
from model.scoring import Batch, BatchScore, Request, make_batch, reduce_logprobs, token_logprobs
from tasks.core.config import Profile
from tasks.evaluation import families
from tasks.evaluation.evaluate import evaluate
from tests.tasks.eval_world import bf16_world_under

SIZES = ModelSizes(
    vocab_size=256, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_seq_len=32, init_std=0.02
)


def _no_checkpointing_expected(_model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """Stands in for `baselines.activation_checkpointing` where `checkpoint_activations=False` must not reach it."""
    raise AssertionError("activation checkpointing entered although checkpoint_activations is False")


def _plain_btm_logits(logits: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Logit ensembling as it was: a product tensor per member."""
    combined = torch.zeros_like(logits[0], dtype=torch.float32)
    for model_logits, w in zip(logits, weights, strict=True):
        combined += w.to(torch.float32)[:, None, None] * model_logits.float()
    return combined


def _plain_ensemble(scorer: EnsembleScorer, batch: Batch) -> dict[str, BatchScore]:
    """The ensemble as it was: an fp32 copy of every member's logits kept for BTM."""
    results: dict[str, BatchScore] = {}
    all_logits, nlls = [], []
    for name, model in scorer.members:
        logits = model(**batch.model_inputs(), use_cache=False).logits.float()
        results[name] = reduce_logprobs(token_logprobs(logits), batch)
        all_logits.append(logits)
        nlls.append(results[name][2])
    weights = batch.per_row(routing_weights(torch.stack(nlls), scorer.temperature, scorer.top_k))
    results[scorer.btm_name] = reduce_logprobs(token_logprobs(_plain_btm_logits(all_logits, weights)), batch)
    return results


class PlainEnsembleScorer(EnsembleScorer):
    """The ensemble as it was (`_plain_ensemble`)."""

    def __call__(self, batch: Batch) -> dict[str, BatchScore]:
        return _plain_ensemble(self, batch)


def _dense(seed: int) -> Olmo2ForCausalLM:
    return build_public_model(SIZES, TokenizerIds(0, 1), seed=seed).eval()


def _batches(steps: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return [torch.randint(2, SIZES.vocab_size, (4, 16), generator=generator) for _ in range(steps)]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("train_experts", [False, True])
def test_checkpointed_router_training_is_bit_identical(
    monkeypatch: pytest.MonkeyPatch, precision: Precision, train_experts: bool
) -> None:
    rows = baselines.random_router_rows(4, SIZES.hidden_size, SIZES.init_std, seed=3)
    start = upcycle(_dense(0), 4, rows, 4)
    for layer in start.model.layers:  # distinct experts, so the routing matters
        layer.mlp.experts.gate_up_proj.data.add_(torch.randn_like(layer.mlp.experts.gate_up_proj) * 0.02)
    checkpointed, plain = copy.deepcopy(start), copy.deepcopy(start)

    losses = train_moe(
        checkpointed, iter(_batches(3)), 1e-2, 0.1, 1.0, train_experts, precision, checkpoint_activations=True
    )
    assert not checkpointed.is_activation_checkpointing  # scoring afterwards runs the plain forward
    assert not getattr(checkpointed, "_require_grads_hooks", None)
    with monkeypatch.context() as patch:
        patch.setattr(baselines, "activation_checkpointing", _no_checkpointing_expected)
        reference = train_moe(
            plain, iter(_batches(3)), 1e-2, 0.1, 1.0, train_experts, precision, checkpoint_activations=False
        )

    assert losses == reference
    trained = checkpointed.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in plain.state_dict().items())
    assert not all(torch.equal(trained[k], v) for k, v in start.state_dict().items())  # it did train


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_ensemble_scores_equal_the_fp32_copies(precision: Precision) -> None:
    members = [(f"m{i}", _dense(i)) for i in range(3)]
    generator = torch.Generator().manual_seed(1)
    requests = [
        Request(
            tuple(torch.randint(2, 256, (int(n),), generator=generator).tolist()),
            tuple(torch.randint(2, 256, (5,), generator=generator).tolist()),
        )
        for n in (3, 9, 14)
    ]
    batch = make_batch(requests, 0)
    with torch.no_grad(), autocast(precision, "cpu"):
        got = EnsembleScorer(members, 1.0, 2, "btm")(batch)
        want = PlainEnsembleScorer(members, 1.0, 2, "btm")(batch)
    assert list(got) == list(want) == ["m0", "m1", "m2", "btm"]
    for name in want:
        assert all(torch.equal(a, b) for a, b in zip(got[name], want[name], strict=True)), name


@pytest.fixture(scope="module")
def bf16_world(tmp_path_factory: pytest.TempPathFactory, tiny_profile: Profile) -> Profile:
    world = bf16_world_under(tmp_path_factory.mktemp("evalmemory"), tiny_profile)
    # checkpointed, so the whole-evaluation check compares it with the plain training at every call
    return world.model_copy(update={"eval": world.eval.model_copy(update={"checkpoint_activations": True})})


def _mismatches(got: dict[str, BatchScore], want: dict[str, BatchScore]) -> list[str]:
    """The names whose scores differ in any element (or that only one side has)."""
    if list(got) != list(want):
        return [f"names {list(got)} != {list(want)}"]
    return [name for name in want if not all(torch.equal(a, b) for a, b in zip(got[name], want[name], strict=True))]


class EvaluationCheck:
    """Runs the plain definition beside the memory-saving one at every call the evaluation makes, on the same inputs
    (and torch RNG state), and records what differs. The evaluation continues on the memory-saving results, so when
    every call matches, the evaluation under the plain definitions (the same code around the same inputs) writes the
    same results.json, without running that whole evaluation a second time."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.ensemble_batches = 0
        self.trainings: list[bool] = []  # train_experts of each checked router training
        self.checkpointed: list[bool] = []  # checkpoint_activations of each
        self.steps = 0  # their training steps, all together

    def scorer(self) -> type[EnsembleScorer]:
        check = self

        class CheckedEnsembleScorer(EnsembleScorer):
            def __call__(self, batch: Batch) -> dict[str, BatchScore]:
                got = super().__call__(batch)
                want = _plain_ensemble(self, batch)
                check.ensemble_batches += 1
                where = f"ensemble batch {check.ensemble_batches}"
                check.problems += [f"{where}: {name}" for name in _mismatches(got, want)]
                return got

        return CheckedEnsembleScorer

    def train_moe(
        self,
        moe: MoEModel,
        batches: Iterable[torch.Tensor],
        lr: float,
        weight_decay: float,
        grad_clip: float,
        train_experts: bool,
        precision: Precision = "fp32",
        *,
        checkpoint_activations: bool,
    ) -> list[float]:
        """`train_moe` as the evaluation calls it, the plain training of a copy of `moe` beside it."""
        steps = list(batches)
        self.steps += len(steps)
        plain = copy.deepcopy(moe)
        settings = (lr, weight_decay, grad_clip, train_experts, precision)
        rng = torch.get_rng_state()
        losses = train_moe(moe, iter(steps), *settings, checkpoint_activations=checkpoint_activations)
        rng_after = torch.get_rng_state()
        torch.set_rng_state(rng)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(baselines, "activation_checkpointing", _no_checkpointing_expected)
            reference = train_moe(plain, iter(steps), *settings, checkpoint_activations=False)
        self.trainings.append(train_experts)
        self.checkpointed.append(checkpoint_activations)
        name = f"router training {len(self.trainings)} (train_experts={train_experts})"
        trained, want = moe.state_dict(), plain.state_dict()
        if losses != reference:
            self.problems.append(f"{name}: losses {losses} != {reference}")
        if list(trained) != list(want) or not all(torch.equal(trained[k], v) for k, v in want.items()):
            self.problems.append(f"{name}: trained weights differ")
        if not torch.equal(torch.get_rng_state(), rng_after):
            self.problems.append(f"{name}: the torch RNG advanced differently")
        if getattr(moe, "is_activation_checkpointing", False) or getattr(moe, "_require_grads_hooks", None):
            self.problems.append(f"{name}: checkpointing left on the model it scores next")
        torch.set_rng_state(rng_after)
        return losses


def test_the_whole_evaluation_is_unchanged(bf16_world: Profile, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every number of results.json (every model, task, SE, sweep, opt-out, routing share, training loss) equals the
    one the plain definitions give, under bf16 autocast: at every ensemble batch and router training of a whole
    evaluation, the plain definition on the same inputs gives bit-identical scores, losses, weights and RNG state.
    With `eval.trim_heap_each_step` (off by default, so every other evaluation test runs without it): the heap is
    trimmed before each training step."""
    check = EvaluationCheck()
    monkeypatch.setattr(families, "EnsembleScorer", check.scorer())
    monkeypatch.setattr(families, "train_moe", check.train_moe)
    trims: list[None] = []
    monkeypatch.setattr(families, "trim_heap", lambda: trims.append(trim_heap()))
    trimmed = bf16_world.model_copy(update={"eval": bf16_world.eval.model_copy(update={"trim_heap_each_step": True})})
    result = evaluate(trimmed, progress=False)
    assert not check.problems, check.problems
    assert len(trims) == check.steps > 0
    assert check.ensemble_batches > 0
    assert set(check.trainings) == {False, True}  # router-only (BTX, router tuning) and with experts (unrestricted)
    assert set(check.checkpointed) == {True}  # eval.checkpoint_activations reached every training
    per_task = json.loads(result.results_json.read_text())["per_task"]
    assert {"BTX", "FlexOlmo (RT, public)", "unrestricted MoE", "BTM (top-2)"} <= set(per_task)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
@pytest.mark.parametrize("release", [release_freed_memory, trim_heap])
def test_freed_heap_memory_goes_back_to_the_os(release: Callable[[], None]) -> None:
    """Holes left between live allocations stay resident until `malloc_trim` hands their pages back."""
    first = np.ones(1 << 19)  # 4 MiB: freeing an mmapped chunk raises glibc's mmap threshold above this size,
    del first  # so the blocks below come from the heap, as activations do
    blocks = [np.ones(1 << 19) for _ in range(64)]
    del blocks[::2]  # 128 MiB of holes between live blocks
    before = current_rss_gib()
    release()
    after = current_rss_gib()
    assert before is not None and after is not None
    assert before - after > 0.06, (before, after)
    assert all(float(b.sum()) == float(1 << 19) for b in blocks)  # what is alive is untouched
