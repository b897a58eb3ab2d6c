"""The generic training loop on tiny real models: schedule, packing order, weight decay, exact resume, DP, DDP."""

from __future__ import annotations

import itertools
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from model.batching import PackedDataset, pack_documents
from model.checkpoint import CheckpointError, find_checkpoint, load_weights, verify
from model.config import ModelSizes, TokenizerIds
from model.coordinated import CoordinatedExpertModel
from model.dp import DPSpec
from model.memory import PeakWindow, current_rss_gib, process_peak_rss_gib
from model.public import build_public_model
from model.schedule import lr_factor, warmup_steps_for
from model.training import (
    TrainSpec,
    coordinated_loss,
    dense_loss,
    evaluate,
    ordered_trainable,
    param_groups,
    train,
)

SIZES = ModelSizes(vocab_size=64, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_seq_len=16)
IDS = TokenizerIds(pad_token_id=0, eos_token_id=1)
SEQ = 16


def make_spec(**overrides) -> TrainSpec:
    values = dict(
        total_steps=8,
        batch_size=4,
        seq_len=SEQ,
        lr=3e-3,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        warmup_steps=2,
        min_lr_ratio=0.1,
        grad_clip=1.0,
        eval_every=4,
        checkpoint_every=3,
        eval_batches=2,
        seed=7,
    )
    values.update(overrides)
    return TrainSpec(**values)


def make_data(seed: int, tokens: int = 2000) -> PackedDataset:
    rng = np.random.default_rng(seed)
    # a learnable stream: documents of repeated short patterns, EOS-terminated
    docs = [list(np.tile(rng.integers(2, SIZES.vocab_size, 3), rng.integers(2, 8))) for _ in range(tokens // 12)]
    return PackedDataset(pack_documents(docs, IDS.eos_token_id), SEQ)


def fresh_model() -> torch.nn.Module:
    return build_public_model(SIZES, IDS, seed=3)


def test_schedule_warms_up_then_decays_to_the_floor() -> None:
    factors = [lr_factor(s, 20, 4, 0.1) for s in range(20)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factors[4] == pytest.approx(1.0) and factors[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(factors[4:]))
    assert warmup_steps_for(100, 0.05) == 5 and warmup_steps_for(10, 0.0) == 0
    with pytest.raises(ValueError):
        lr_factor(0, 5, 5, 0.1)


def test_packing_order_is_a_pure_function_of_seed_and_step() -> None:
    data = make_data(0)
    n = data.num_sequences
    seen = np.concatenate([data.batch_indices(s, 4, seed=1) for s in range(n // 4)])
    assert len(set(seen.tolist())) == len(seen)  # no sequence twice within an epoch
    assert set(np.concatenate([data.batch_indices(s, 4, seed=1) for s in range(n)]).tolist()) == set(range(n))
    again = PackedDataset(data.tokens.copy(), SEQ)  # a new process (no cache) draws the same batch for the same step
    assert np.array_equal(again.batch_indices(5, 4, seed=1), data.batch_indices(5, 4, seed=1))
    assert not np.array_equal(data.batch_indices(5, 4, seed=2), data.batch_indices(5, 4, seed=1))
    shares = [data.batch_indices(3, 4, seed=1, rank=r, world_size=2) for r in range(2)]
    assert np.array_equal(np.concatenate(shares), data.batch_indices(3, 4, seed=1))
    assert data.tail_tokens == len(data.tokens) - n * SEQ
    with pytest.raises(ValueError, match="fewer than one batch"):
        data.batch_indices(0, n + 1, seed=1)


def test_no_weight_decay_on_embeddings_norms_or_vectors() -> None:
    model = fresh_model()
    named = ordered_trainable(model, 0.1)
    groups = param_groups(named, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    names = {n for n, p in named if id(p) in decayed}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert not any("embed_tokens" in n or "norm" in n for n in names)
    assert any("lm_head" in n for n in names) and any("mlp.up_proj" in n for n in names)


class Kill(Exception):
    pass


def test_killed_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """A run interrupted after step 5 (last checkpoint at step 3) resumes and ends bit-identical to a run never
    interrupted."""
    data, val = make_data(0), make_data(1, 400)
    spec = make_spec()
    reference = fresh_model()
    full = train(reference, dense_loss(1e-4), data, val, spec, tmp_path / "full")

    def kill_at_5(event) -> None:
        if event.kind == "step" and event.step == 5:
            raise Kill

    interrupted = fresh_model()
    with pytest.raises(Kill):
        train(interrupted, dense_loss(1e-4), data, val, spec, tmp_path / "run", callback=kill_at_5)
    assert verify(find_checkpoint(tmp_path / "run" / "last"))["step"] == 3
    resumed_model = fresh_model()  # a new process: weights come only from the checkpoint
    resumed = train(resumed_model, dense_loss(1e-4), data, val, spec, tmp_path / "run")
    assert resumed.resumed_from == 3 and resumed.steps == full.steps == 8
    for (name, a), b in zip(reference.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.val_loss == full.val_loss
    assert [h["step"] for h in full.history] == [4.0, 8.0] and full.best_val_loss == min(
        h["val_loss"] for h in full.history
    )
    exported = load_weights(tmp_path / "run" / ("last" if resumed.exported_step == resumed.steps else "best"))
    assert torch.equal(exported["model.embed_tokens.weight"], resumed_model.model.embed_tokens.weight.detach())
    assert resumed.exported_step == full.exported_step
    assert (tmp_path / "run" / "best" / "weights.safetensors").exists()
    other = make_spec(lr=1e-3)
    with pytest.raises(CheckpointError, match="other settings"):
        train(fresh_model(), dense_loss(1e-4), data, val, other, tmp_path / "run")


def test_a_step_is_reported_after_the_next_is_queued_unless_it_validates_checkpoints_or_ends(tmp_path: Path) -> None:
    """No host sync in the step: step t's metrics are read once step t+1 has run (on a GPU: been queued), except where
    step t validates, checkpoints or ends the run; every step is still reported once, in order, with its own loss."""
    losses: list[float] = []
    loss_fn = dense_loss(1e-4)

    def recording(model, input_ids):
        parts = loss_fn(model, input_ids)
        if torch.is_grad_enabled():  # a training step (validation runs under no_grad)
            losses.append(float(parts["loss"].detach()))
        return parts

    seen: list[tuple[str, int, int]] = []
    reported: dict[int, float] = {}

    def watch(event) -> None:
        seen.append((event.kind, event.step, len(losses)))
        if event.kind == "step":
            reported[event.step] = event.metrics["loss"]

    spec = make_spec()  # 8 steps, validation every 4, checkpoints every 3
    result = train(fresh_model(), recording, make_data(0), make_data(1, 400), spec, tmp_path, callback=watch)
    steps_run_when_reported = {step: run for kind, step, run in seen if kind == "step"}
    assert steps_run_when_reported == {1: 2, 2: 3, 3: 3, 4: 4, 5: 6, 6: 6, 7: 8, 8: 8}
    assert [(kind, step) for kind, step, _ in seen if kind == "eval" or step in (4, 8)] == [
        ("step", 4),
        ("eval", 4),
        ("step", 8),
        ("eval", 8),
    ]
    assert reported == dict(enumerate(losses, start=1))
    assert result.train_metrics["loss"] == losses[-1]


def test_a_non_finite_loss_names_its_step_though_the_next_step_ran(tmp_path: Path) -> None:
    loss_fn = dense_loss(1e-4)
    calls = itertools.count(1)

    def nan_at_step_2(model, input_ids):
        parts = loss_fn(model, input_ids)
        if torch.is_grad_enabled() and next(calls) == 2:
            parts = {**parts, "loss": parts["loss"] * float("nan")}
        return parts

    with pytest.raises(FloatingPointError, match="at step 2; lower the learning rate"):
        train(fresh_model(), nan_at_step_2, make_data(0), None, make_spec(), tmp_path)


def test_the_best_validation_step_is_exported_when_validation_rose(tmp_path: Path) -> None:
    """Overfitting one batch (lr 3e-2, validation on other text): validation rises after its best, so the model handed
    back holds the best checkpoint's weights, not the last step's, and the result says which step and why; the last
    checkpoint keeps the last weights (resuming continues the run)."""
    data, val = make_data(0, 64), make_data(1, 400)
    spec = make_spec(lr=3e-2, total_steps=12, eval_every=2)
    model = fresh_model()
    result = train(model, dense_loss(1e-4), data, val, spec, tmp_path / "run")
    losses = {int(h["step"]): h["val_loss"] for h in result.history}
    assert result.best_step is not None and result.best_step < result.steps
    assert losses[result.steps] > losses[result.best_step] == min(losses.values())
    assert result.exported_step == result.best_step and "rose" in result.export_reason
    best, last = load_weights(tmp_path / "run" / "best"), load_weights(tmp_path / "run" / "last")
    held = dict(model.named_parameters())
    assert all(torch.equal(best[n], held[n].detach()) for n in best)
    assert not all(torch.equal(last[n], held[n].detach()) for n in last)
    assert result.val_loss == losses[result.steps]  # the last step's validation stays reported as such


def test_the_last_step_is_exported_when_it_is_the_best(tmp_path: Path) -> None:
    data, val = make_data(0), make_data(0, 400)  # validation on the training text: it falls to the end
    spec = make_spec(lr=3e-3, total_steps=8, eval_every=4)
    result = train(fresh_model(), dense_loss(1e-4), data, val, spec, tmp_path / "run")
    assert result.best_step == result.exported_step == result.steps and "is the best" in result.export_reason


def test_tampered_checkpoint_is_refused(tmp_path: Path) -> None:
    data = make_data(0)
    train(fresh_model(), dense_loss(0.0), data, None, make_spec(total_steps=3), tmp_path)
    weights = tmp_path / "last" / "weights.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        train(fresh_model(), dense_loss(0.0), data, None, make_spec(total_steps=3), tmp_path)


def coordinated(seed: int = 0) -> tuple[CoordinatedExpertModel, torch.nn.Module, torch.Tensor]:
    public = fresh_model()
    g = torch.Generator().manual_seed(seed)
    r_pub, r_exp = torch.randn(SIZES.hidden_size, generator=g) * 0.3, torch.randn(SIZES.hidden_size, generator=g) * 0.3
    return CoordinatedExpertModel.from_public(public, r_pub, r_exp), public, r_pub


def test_expert_training_updates_only_the_expert_and_frozen_tensors_get_no_gradient(tmp_path: Path) -> None:
    model, public, r_pub = coordinated()
    before = {k: v.clone() for k, v in model.expert_state().items()}
    grads_seen: dict[str, bool] = {}

    def watch(event) -> None:
        if event.kind == "step" and event.step == 1:
            grads_seen.update({n: p.grad is not None for n, p in model.named_parameters()})

    train(
        model,
        coordinated_loss,
        make_data(0),
        None,
        make_spec(weight_decay=0.0, total_steps=4),
        tmp_path,
        callback=watch,
    )
    model.assert_frozen_unchanged(public, r_pub)
    assert not any(seen for n, seen in grads_seen.items() if "ffn_public" in n or "embed" in n or "router_public" in n)
    after = model.expert_state()
    assert not torch.equal(before["layers.0.up_proj.weight"], after["layers.0.up_proj.weight"])
    assert not torch.equal(before["layers.1.router"], after["layers.1.router"])


def test_dp_run_trains_and_reports_epsilon(tmp_path: Path) -> None:
    model, public, r_pub = coordinated()
    data, val = make_data(0, 3000), make_data(1, 400)
    dp = DPSpec(target_epsilon=8.0, target_delta=1e-5, max_grad_norm=1.0)
    spec = make_spec(weight_decay=0.0, total_steps=6, dp=dp, lr=1e-2, eval_every=6)
    before = model.expert_state()
    result = train(model, coordinated_loss, data, val, spec, tmp_path)
    assert result.noise_multiplier is not None and result.noise_multiplier > 0
    assert result.epsilon is not None and 0 < result.epsilon <= 8.0 * 1.05
    model.assert_frozen_unchanged(public, r_pub)
    assert not torch.equal(before["layers.0.down_proj.weight"], model.expert_state()["layers.0.down_proj.weight"])
    assert math.isfinite(result.val_loss)
    # resuming a finished DP run reproduces its accountant
    again, _, _ = coordinated()
    resumed = train(again, coordinated_loss, data, val, spec, tmp_path)
    assert resumed.epsilon == pytest.approx(result.epsilon)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = fresh_model()
        train(
            model,
            dense_loss(1e-4),
            make_data(0),
            None,
            make_spec(total_steps=3, checkpoint_every=10, eval_every=10),
            Path(out) / "ckpt",
        )
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(out) / f"rank{rank}.safetensors")
        )
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_on_cpu_keeps_ranks_identical(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2))
    single = fresh_model()
    train(
        single,
        dense_loss(1e-4),
        make_data(0),
        None,
        make_spec(total_steps=3, checkpoint_every=10, eval_every=10),
        tmp_path / "single",
    )
    start = fresh_model().state_dict()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        # same global batch split over two ranks = the single-process step, up to float summation order
        torch.testing.assert_close(rank0[key], single.state_dict()[key], rtol=1e-4, atol=1e-5)
    assert not torch.equal(rank0["lm_head.weight"], start["lm_head.weight"])
    assert (tmp_path / "ckpt" / "last" / "weights.safetensors").exists()  # rank 0 wrote the checkpoint


def test_bf16_autocast_on_cpu_computes_in_bf16_and_keeps_fp32_weights(tmp_path: Path) -> None:
    """`precision: bf16` is honoured on CPU too (this build machine's AVX512-BF16 matmuls run ~4-6x faster than fp32):
    the matmuls run in bf16, the weights and the optimizer state stay fp32, and the loss still falls."""
    data, val = make_data(0), make_data(1, 400)
    seen: set[torch.dtype] = set()
    model = fresh_model()
    model.lm_head.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    spec = dict(total_steps=40, eval_every=20, lr=1e-2)
    result = train(model, dense_loss(1e-4), data, val, make_spec(precision="bf16", **spec), tmp_path / "bf16")
    assert seen == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    reference = train(fresh_model(), dense_loss(1e-4), data, val, make_spec(**spec), tmp_path / "fp32")
    untrained = evaluate(fresh_model(), dense_loss(1e-4), val.fixed_batches(4, 2), make_spec())["loss"]
    assert result.val_loss < untrained - 0.02 and reference.val_loss < untrained - 0.02  # both learn
    assert reference.val_loss != result.val_loss  # the flag changes the arithmetic, not only a label
    assert abs(reference.val_loss - result.val_loss) < 0.1 * reference.val_loss


def test_compile_is_part_of_the_fingerprint_and_refuses_dp(tmp_path: Path) -> None:
    assert make_spec(compile=True).fingerprint() != make_spec().fingerprint()
    with pytest.raises(ValueError, match="does not combine with DP-SGD"):
        train(
            fresh_model(),
            dense_loss(1e-4),
            make_data(0),
            None,
            make_spec(compile=True, dp=DPSpec(8.0, 1e-5, 1.0)),
            tmp_path,
        )


@pytest.mark.slow  # two inductor compiles: ~75 s on 2 cores; `runtime.compile` is off by default
def test_compiled_training_step_matches_eager(tmp_path: Path, monkeypatch) -> None:
    """`runtime.compile`: the step runs through torch.compile (dense and coordinated losses) and trains to what the
    eager loop reaches, within float rounding; the frozen part of the expert model stays frozen."""
    data, val = make_data(0), make_data(1, 400)
    eager = fresh_model()
    train(eager, dense_loss(1e-4), data, val, make_spec(total_steps=6), tmp_path / "eager")
    compiled = fresh_model()
    calls = []
    original = torch.compile

    def counting_compile(fn, *args, **kwargs):  # the real torch.compile, counted: the flag must reach it
        calls.append(fn)
        return original(fn, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", counting_compile)
    result = train(compiled, dense_loss(1e-4), data, val, make_spec(total_steps=6, compile=True), tmp_path / "compiled")
    expert, public, r_pub = coordinated()
    train(
        expert,
        coordinated_loss,
        data,
        None,
        make_spec(weight_decay=0.0, total_steps=3, compile=True),
        tmp_path / "expert",
    )
    assert len(calls) == 2 and math.isfinite(result.val_loss)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)
    expert.assert_frozen_unchanged(public, r_pub)


def test_each_run_reports_its_own_peak_memory_without_touching_the_process_peak(tmp_path: Path) -> None:
    stage = PeakWindow()  # e.g. a pipeline stage around the ballast and the run
    # resident before the run, 512 MiB above anything this process held before: a new record, the stage's, not the run's
    ballast_gib = max(0.0, process_peak_rss_gib() - current_rss_gib()) + 0.5
    ballast = torch.ones(int(ballast_gib * 2**30) // 4)
    ballast.add_(1)
    del ballast
    process_peak = process_peak_rss_gib()
    result = train(fresh_model(), dense_loss(1e-4), make_data(0), None, make_spec(total_steps=3), tmp_path)
    memory = result.peak_memory
    assert memory is not None and memory.device_gib is None
    assert not memory.exact and 0 < memory.rss_gib < process_peak - 0.4  # sampled: the run set no record
    enclosing = stage.close()
    assert enclosing.exact and enclosing.rss_gib >= process_peak  # the stage set the record: exact
    assert process_peak_rss_gib() >= process_peak  # nothing was reset (/usr/bin/time and ru_maxrss stay true)
