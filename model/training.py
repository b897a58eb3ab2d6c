"""The training loop shared by public pretraining, coordinated expert training and dense domain training.

Why one generic loop: the three runs differ only in which parameters train and in the loss; the loop takes a model, a
loss function and packed token data, and owns everything a long run needs to be trusted: AdamW (decay only on matrices
that are not embeddings), warmup + cosine LR, gradient clipping, periodic validation, best/last checkpoints, exact resume
(same batches, same optimizer state, same RNG streams), bf16 autocast (CUDA and CPU), DDP across processes, and DP-SGD.

The caller decides what trains by setting `requires_grad`: frozen tensors get no gradient and no optimizer state.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

from model import checkpoint as ckpt
from model.batching import PackedDataset
from model.dp import DPSpec
from model.losses import packed_lm_losses
from model.memory import PeakMemory, PeakWindow
from model.precision import Precision, autocast
from model.schedule import lr_factor

LossFn = Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]]
"""loss_fn(model, input_ids) -> {"loss": scalar to minimise, other scalars to report (e.g. "ce", "lm_z")}."""


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines the result of a run (and so must match when resuming)."""

    total_steps: int
    batch_size: int  # global: sequences per optimizer step over all processes (expected batch size under DP)
    seq_len: int
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    warmup_steps: int
    min_lr_ratio: float
    grad_clip: float
    eval_every: int
    checkpoint_every: int
    eval_batches: int
    seed: int
    device: str = "cpu"
    precision: Precision = "fp32"  # resolved (never "auto"): it is part of the run's fingerprint
    dp: DPSpec | None = None
    # torch.compile the forward pass and the loss of each training step (not validation): it fuses the norms, RoPE,
    # activations and the cross-entropy into fewer kernels, which matters where an eager step is bound by launching
    # them (expected on a GPU at `small` size; benchmarks/device_check.sh measures both). On 2 CPU cores at `demo` size
    # it changed tokens/s by -4% (dense) to +10% (expert) for a ~50 s compile (benchmarks/RESULTS.md): off by default.
    # Part of the fingerprint when on: compiled kernels round differently, and a resumed run must end where it would have.
    compile: bool = False

    def fingerprint(self, extra: str = "") -> str:
        """Identity of the run: a checkpoint may only be resumed by a run with the same fingerprint."""
        # `compile` came later: it only counts when set, so checkpoints written before it existed still resume
        data = {k: v for k, v in asdict(self).items() if k != "device" and not (k == "compile" and not v)}
        return hashlib.sha256((json.dumps(data, sort_keys=True, default=str) + extra).encode()).hexdigest()


@dataclass
class StepEvent:
    """What the progress callback sees after every optimizer step and every evaluation."""

    kind: Literal["step", "eval"]
    step: int  # optimizer steps done
    total_steps: int
    tokens: int  # training tokens consumed so far (all processes)
    lr: float
    metrics: dict[str, float]
    tokens_per_s: float


@dataclass
class TrainResult:
    steps: int
    tokens: int
    train_metrics: dict[str, float]
    val_loss: float | None
    best_val_loss: float | None
    best_step: int | None
    epsilon: float | None
    noise_multiplier: float | None
    tokens_per_s: float
    train_seconds: float
    last_dir: Path
    best_dir: Path | None
    resumed_from: int | None
    history: list[dict[str, float]] = field(default_factory=list)
    peak_memory: PeakMemory | None = None  # this process's peaks during this call (resident, and CUDA on a GPU)


def is_embedding(name: str) -> bool:
    return "embed_tokens" in name or name.endswith("wte.weight")


def param_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: no decay on embeddings, norms (1-D) or biases / router rows (1-D, scalars)."""
    decay = [p for n, p in named if p.ndim >= 2 and not is_embedding(n)]
    no_decay = [p for n, p in named if not (p.ndim >= 2 and not is_embedding(n))]
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def ordered_trainable(model: nn.Module, weight_decay: float) -> list[tuple[str, nn.Parameter]]:
    """Trainable (name, parameter) in the order the optimizer holds them (decayed group first)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters (every requires_grad is False)")
    decay = [(n, p) for n, p in named if p.ndim >= 2 and not is_embedding(n)]
    rest = [(n, p) for n, p in named if not (p.ndim >= 2 and not is_embedding(n))]
    return decay + rest


def make_adamw(groups: list[dict[str, Any]], spec: TrainSpec) -> torch.optim.Optimizer:
    """AdamW; the fused kernel where this torch build has it for the device (one pass over all tensors)."""
    try:
        return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, foreach=True)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _autocast(spec: TrainSpec):
    """bf16 autocast on CUDA and on CPU (matmuls in bf16, weights, optimizer state and losses in fp32)."""
    return autocast(spec.precision, spec.device)


def _rng_state(spec: TrainSpec, noise: torch.Generator | None) -> dict[str, torch.Tensor]:
    state = {"torch_cpu": torch.get_rng_state()}
    if spec.device.startswith("cuda"):
        state["torch_cuda"] = torch.cuda.get_rng_state()
    if noise is not None:
        state["dp_noise"] = noise.get_state()
    return state


def _set_rng_state(state: dict[str, torch.Tensor], noise: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["torch_cuda"])
    if noise is not None and "dp_noise" in state:
        noise.set_state(state["dp_noise"])


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: LossFn, batches: list[torch.Tensor], spec: TrainSpec) -> dict[str, float]:
    """Token-weighted mean of every reported scalar over the fixed validation batches."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    weight = 0
    for batch in batches:
        with _autocast(spec):
            parts = loss_fn(model, batch.to(spec.device))
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + float(value) * batch.shape[0]
        weight += batch.shape[0]
    model.train(was_training)
    return {key: value / max(1, weight) for key, value in sums.items()}


def train(
    model: nn.Module,
    loss_fn: LossFn,
    train_data: PackedDataset,
    val_data: PackedDataset | None,
    spec: TrainSpec,
    out_dir: str | Path,
    *,
    resume: bool = True,
    fingerprint_extra: str = "",
    callback: Callable[[StepEvent], None] | None = None,
) -> TrainResult:
    """Train `model`'s trainable parameters for `spec.total_steps` optimizer steps; checkpoints go to out_dir/{last,best}.

    With `resume`, a complete checkpoint in out_dir/last with the same fingerprint is continued; a different fingerprint is
    refused (start fresh with resume=False). Under torch.distributed each process must call this with the same arguments;
    rank 0 writes the checkpoints.
    """
    out = Path(out_dir)
    rank, world = _world()
    if spec.dp is not None and world > 1:
        raise ValueError("DP-SGD runs in one process here; launch DP expert training without torchrun")
    if spec.dp is not None and spec.compile:
        raise ValueError(
            "runtime.compile does not combine with DP-SGD (Opacus' per-sample hooks); switch one of them off"
        )
    if spec.batch_size % world:
        raise ValueError(f"batch_size ({spec.batch_size}) must be divisible by the number of processes ({world})")
    if train_data.seq_len != spec.seq_len:
        raise ValueError(f"train data is packed for seq_len {train_data.seq_len}, the spec says {spec.seq_len}")
    if train_data.num_sequences < spec.batch_size:
        raise ValueError(
            f"the training data holds {train_data.num_sequences} sequences of {spec.seq_len} tokens, fewer than one batch "
            f"({spec.batch_size})"
        )
    fingerprint = spec.fingerprint(fingerprint_extra)
    memory = PeakWindow(spec.device)
    model.to(spec.device)
    model.train()
    named = ordered_trainable(model, spec.weight_decay)
    names = [n for n, _ in named]
    params = [p for _, p in named]
    base_optimizer = make_adamw(param_groups(named, spec.weight_decay), spec)

    noise_gen: torch.Generator | None = None
    optimizer: torch.optim.Optimizer = base_optimizer
    accountant = None
    sample_rate = noise_multiplier = None
    if spec.dp is not None:
        from model import dp as dp_mod

        sample_rate = spec.batch_size / train_data.num_sequences
        noise_multiplier = dp_mod.calibrate_noise(spec.dp, sample_rate, spec.total_steps)
        noise_gen = torch.Generator(device=spec.device).manual_seed(spec.seed)
        optimizer = dp_mod.make_optimizer(base_optimizer, noise_multiplier, spec.dp, spec.batch_size, noise_gen)
        accountant = dp_mod.accountant_from_history([])

    step = 0
    best_val: float | None = None
    best_step: int | None = None
    history: list[dict[str, float]] = []
    resumed_from: int | None = None
    last_dir, best_dir = out / "last", out / "best"
    found = ckpt.find_checkpoint(last_dir) if resume else None
    if found is not None:
        state = ckpt.verify(found)
        if state.get("fingerprint") != fingerprint:
            raise ckpt.CheckpointError(
                f"{found}: the checkpoint belongs to a run with other settings or data; start fresh (resume=False / --fresh) "
                "or restore the original settings"
            )
        weights = ckpt.load_weights(found)
        with torch.no_grad():
            for name, p in named:
                p.copy_(weights[name].to(p.device))
        ckpt.load_optimizer(found, base_optimizer, names)
        _set_rng_state(ckpt.load_rng(found), noise_gen)
        step = resumed_from = int(state["step"])
        best_val, best_step = state.get("best_val"), state.get("best_step")
        history = list(state.get("history", []))
        if accountant is not None:
            from model import dp as dp_mod

            accountant = dp_mod.accountant_from_history(state.get("dp_history", []))

    wrapped: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(
            model, device_ids=[torch.device(spec.device).index] if spec.device.startswith("cuda") else None
        )

    step_loss: Callable[[torch.Tensor], dict[str, torch.Tensor]] = lambda x: loss_fn(wrapped, x)  # noqa: E731
    if spec.compile:
        step_loss = torch.compile(step_loss)

    val_batches = val_data.fixed_batches(spec.batch_size, spec.eval_batches) if val_data is not None else []
    tokens_per_step = spec.batch_size * spec.seq_len

    def save(directory: Path, with_optimizer: bool) -> None:
        if rank != 0:
            return
        state = {
            "fingerprint": fingerprint,
            "step": step,
            "tokens": step * tokens_per_step,
            "best_val": best_val,
            "best_step": best_step,
            "history": history,
            "total_steps": spec.total_steps,
            "dp_history": [list(h) for h in accountant.history] if accountant is not None else [],
        }
        ckpt.save_checkpoint(
            directory,
            {n: p for n, p in named},
            base_optimizer if with_optimizer else None,
            names,
            _rng_state(spec, noise_gen),
            state,
        )

    def barrier() -> None:
        if world > 1:
            dist.barrier()

    def run_eval() -> dict[str, float]:
        nonlocal best_val, best_step
        metrics = evaluate(model, loss_fn, val_batches, spec) if val_batches else {}
        record = {"step": float(step), **{f"val_{k}": v for k, v in metrics.items()}}
        history.append(record)
        if metrics and (best_val is None or metrics["loss"] < best_val):
            best_val, best_step = metrics["loss"], step
            save(best_dir, with_optimizer=False)
        if callback is not None:
            callback(StepEvent("eval", step, spec.total_steps, step * tokens_per_step, _lr(step - 1), metrics, 0.0))
        return metrics

    def _lr(at: int) -> float:
        return spec.lr * lr_factor(max(0, at), spec.total_steps, spec.warmup_steps, spec.min_lr_ratio)

    train_metrics: dict[str, float] = {}
    started = time.perf_counter()
    steps_this_session = 0
    train_seconds = 0.0
    while step < spec.total_steps:
        tick = time.perf_counter()
        lr = _lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if spec.dp is not None:
            from model import dp as dp_mod

            indices = train_data.poisson_indices(step, sample_rate, spec.seed)
            batch = train_data.rows(indices).to(spec.device)

            def loss_of(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
                with _autocast(spec):
                    return loss_fn(m, x)["loss"]

            total = dp_mod.per_sample_gradients(model, params, loss_of, batch)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
            parts_out = {"loss": total / max(1, len(indices)), "batch_sequences": float(len(indices))}
        else:
            indices = train_data.batch_indices(step, spec.batch_size, spec.seed, rank, world)
            batch = train_data.rows(indices).to(spec.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with _autocast(spec):
                parts = step_loss(batch)
            parts["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
            optimizer.step()
            parts_out = {k: float(v.detach()) for k, v in parts.items()}
            parts_out["grad_norm"] = float(grad_norm)
            if world > 1:
                packed = torch.tensor([parts_out[k] for k in sorted(parts_out)], dtype=torch.float64)
                dist.all_reduce(packed)
                parts_out = {k: float(v) / world for k, v in zip(sorted(parts_out), packed)}
        step += 1
        steps_this_session += 1
        train_seconds += time.perf_counter() - tick
        train_metrics = {**parts_out, "lr": lr}
        if not math.isfinite(train_metrics["loss"]):
            raise FloatingPointError(
                f"training loss is {train_metrics['loss']} at step {step}; lower the learning rate"
            )
        if callback is not None:
            callback(
                StepEvent(
                    "step",
                    step,
                    spec.total_steps,
                    step * tokens_per_step,
                    lr,
                    train_metrics,
                    steps_this_session * tokens_per_step / max(train_seconds, 1e-9),
                )
            )
        if step % spec.eval_every == 0 and step < spec.total_steps:
            run_eval()
        if step % spec.checkpoint_every == 0 and step < spec.total_steps:
            save(last_dir, with_optimizer=True)
            barrier()

    val_metrics = run_eval() if (resumed_from != spec.total_steps) else {}
    if not val_metrics and history:
        val_metrics = {k[4:]: v for k, v in history[-1].items() if k.startswith("val_")}
    save(last_dir, with_optimizer=True)
    barrier()
    epsilon = accountant.get_epsilon(spec.dp.target_delta) if accountant is not None and accountant.history else None
    del started
    return TrainResult(
        steps=step,
        tokens=step * tokens_per_step,
        train_metrics=train_metrics,
        val_loss=val_metrics.get("loss"),
        best_val_loss=best_val,
        best_step=best_step,
        epsilon=epsilon,
        noise_multiplier=noise_multiplier,
        tokens_per_s=steps_this_session * tokens_per_step / train_seconds if train_seconds else 0.0,
        train_seconds=train_seconds,
        last_dir=last_dir,
        best_dir=best_dir if best_step is not None else None,
        resumed_from=resumed_from,
        history=history,
        peak_memory=memory.close(),
    )


def dense_loss(lm_z_weight: float) -> LossFn:
    """Next-token CE + LM z-loss for a plain causal LM on packed rows (M_pub, dense domain models)."""

    def loss_fn(model: nn.Module, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = model(input_ids=input_ids, use_cache=False).logits
        ce, lm_z = packed_lm_losses(logits, input_ids)
        return {"loss": ce + lm_z_weight * lm_z, "ce": ce, "lm_z": lm_z}

    return loss_fn


def coordinated_loss(model: nn.Module, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The coordinated expert model's own loss (CE + LM z-loss + router z-loss, weights set at construction)."""
    out = model(input_ids)
    return {"loss": out.loss, "ce": out.ce, "lm_z": out.lm_z, "router_z": out.router_z}
