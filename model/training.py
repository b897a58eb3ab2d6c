"""The training loop shared by public pretraining, coordinated expert training and dense domain training.

Why one generic loop: the three runs differ only in which parameters train and in the loss; the loop takes a model, a
loss function and packed token data, and owns everything a long run needs to be trusted: AdamW (decay only on matrices
that are not embeddings), warmup + cosine LR, gradient clipping, periodic validation, best/last checkpoints, exact
resume (same batches, same optimizer state, same RNG streams), bf16 autocast (CUDA and CPU), DDP and DP-SGD, and no
host sync inside a step (a step's metrics are read after the next one is queued).

The caller decides what trains by setting `requires_grad`: frozen tensors get no gradient and no optimizer state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from model import checkpoint as ckpt
from model import dp as dp_mod
from model.batching import PackedDataset
from model.losses import packed_lm_losses
from model.memory import PeakWindow
from model.optimizer import make_adamw, ordered_trainable, param_groups
from model.precision import autocast
from model.schedule import lr_factor
from model.train_spec import LossFn, StepEvent, TrainResult, TrainSpec


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _autocast(spec: TrainSpec) -> AbstractContextManager[Any]:
    """bf16 autocast on CUDA and on CPU (matmuls in bf16, weights, optimizer state and losses in fp32)."""
    return autocast(spec.precision, spec.device)


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


def _check_run(spec: TrainSpec, train_data: PackedDataset, world: int) -> None:
    """Refuse a run that cannot work before it touches the model."""
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
            f"the training data holds {train_data.num_sequences} sequences of {spec.seq_len} tokens, fewer than one "
            f"batch ({spec.batch_size})"
        )


@dataclass
class _Privacy:
    """DP-SGD's part of a run: Poisson sample rate, calibrated noise, the noise generator and the RDP accountant."""

    sample_rate: float
    noise_multiplier: float
    noise: torch.Generator
    accountant: Any  # opacus' RDPAccountant


@dataclass(frozen=True)
class _StepMetrics:
    """One optimizer step's reported scalars, read on the host only when `read` is called.

    Why not `float()` them in the step: on a GPU every read is a host sync that waits for the step's last kernel, so
    the host could not queue the next step while the device works. The values are packed into one float64 vector and,
    from a CUDA device, copied without blocking with an event recorded after the copy; `read` waits for that event only,
    not for whatever was queued after it. On a CPU the ops have already run and `read` costs nothing."""

    keys: tuple[str, ...]
    values: torch.Tensor  # (len(keys),) float64, on the host
    ready: torch.cuda.Event | None

    @classmethod
    def of(cls, keys: tuple[str, ...], packed: torch.Tensor) -> _StepMetrics:
        if packed.device.type != "cuda":
            return cls(keys, packed, None)
        on_host = packed.to("cpu", non_blocking=True)  # into pinned memory: the copy is queued, not waited for
        ready = torch.cuda.Event()
        ready.record()
        return cls(keys, on_host, ready)

    def read(self) -> dict[str, float]:
        if self.ready is not None:
            self.ready.synchronize()
        return dict(zip(self.keys, self.values.tolist(), strict=True))


@dataclass(frozen=True)
class _Unread:
    """A finished step whose metrics have not been read yet (see `_Run.step`)."""

    step: int
    lr: float
    metrics: _StepMetrics


@dataclass
class _Progress:
    """Where the run stands: what a checkpoint records besides tensors, and what resuming restores."""

    step: int = 0
    best_val: float | None = None
    best_step: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None
    train_metrics: dict[str, float] = field(default_factory=dict)
    steps_this_session: int = 0
    train_seconds: float = 0.0


class _Run:
    """One call of `train`: the model with its optimizer and where the run stands. `train` calls the methods in a fixed
    order (set up, resume, prepare, steps, finish), and that order fixes every RNG draw: resuming is exact."""

    step_loss: Callable[[torch.Tensor], dict[str, torch.Tensor]]  # set by prepare
    val_batches: list[torch.Tensor]  # set by prepare

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train_data: PackedDataset,
        spec: TrainSpec,
        out: Path,
        world: tuple[int, int],
        fingerprint: str,
        callback: Callable[[StepEvent], None] | None,
    ) -> None:
        self.model, self.loss_fn, self.train_data, self.spec = model, loss_fn, train_data, spec
        self.rank, self.world = world
        self.fingerprint, self.callback = fingerprint, callback
        self.last_dir, self.best_dir = out / "last", out / "best"
        self.tokens_per_step = spec.batch_size * spec.seq_len
        self.progress = _Progress()
        self.unread: _Unread | None = None
        model.to(spec.device)
        model.train()
        self.named = ordered_trainable(model, spec.weight_decay)
        self.names = [n for n, _ in self.named]
        self.params = [p for _, p in self.named]
        self.base_optimizer = make_adamw(param_groups(self.named, spec.weight_decay), spec.lr, spec.betas)
        self.optimizer: torch.optim.Optimizer = self.base_optimizer
        self.privacy: _Privacy | None = None
        if spec.dp is not None:
            sample_rate = spec.batch_size / train_data.num_sequences
            noise_multiplier = dp_mod.calibrate_noise(spec.dp, sample_rate, spec.total_steps)
            noise = torch.Generator(device=spec.device).manual_seed(spec.seed)
            self.optimizer = dp_mod.make_optimizer(
                self.base_optimizer, noise_multiplier, spec.dp, spec.batch_size, noise
            )
            accountant = dp_mod.accountant_from_history([])
            self.privacy = _Privacy(sample_rate, noise_multiplier, noise, accountant)

    @property
    def _noise(self) -> torch.Generator | None:
        return self.privacy.noise if self.privacy is not None else None

    def resume(self) -> None:
        """Continue from a complete checkpoint in out_dir/last when there is one; refuse another run's checkpoint."""
        found = ckpt.find_checkpoint(self.last_dir)
        if found is None:
            return
        state = ckpt.verify(found)
        if state.get("fingerprint") != self.fingerprint:
            raise ckpt.CheckpointError(
                f"{found}: the checkpoint belongs to a run with other settings or data; start fresh (resume=False / "
                "--fresh) or restore the original settings"
            )
        weights = ckpt.load_weights(found)
        with torch.no_grad():
            for name, p in self.named:
                p.copy_(weights[name].to(p.device))
        ckpt.load_optimizer(found, self.base_optimizer, self.names)
        ckpt.restore_rng(ckpt.load_rng(found), self._noise)
        progress = self.progress
        progress.step = progress.resumed_from = int(state["step"])
        progress.best_val, progress.best_step = state.get("best_val"), state.get("best_step")
        progress.history = list(state.get("history", []))
        if self.privacy is not None:
            self.privacy.accountant = dp_mod.accountant_from_history(state.get("dp_history", []))

    def prepare(self, val_data: PackedDataset | None) -> None:
        """DDP across processes, the compiled step loss, the fixed validation batches."""
        spec, loss_fn = self.spec, self.loss_fn
        wrapped: nn.Module = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(
                self.model, device_ids=[torch.device(spec.device).index] if spec.device.startswith("cuda") else None
            )
        self.step_loss = lambda x: loss_fn(wrapped, x)
        if spec.compile:
            self.step_loss = torch.compile(self.step_loss)
        self.val_batches = val_data.fixed_batches(spec.batch_size, spec.eval_batches) if val_data is not None else []

    def lr(self, at: int) -> float:
        spec = self.spec
        return spec.lr * lr_factor(max(0, at), spec.total_steps, spec.warmup_steps, spec.min_lr_ratio)

    def save(self, directory: Path, with_optimizer: bool) -> None:
        if self.rank != 0:
            return
        progress = self.progress
        state = {
            "fingerprint": self.fingerprint,
            "step": progress.step,
            "tokens": progress.step * self.tokens_per_step,
            "best_val": progress.best_val,
            "best_step": progress.best_step,
            "history": progress.history,
            "total_steps": self.spec.total_steps,
            "dp_history": [list(h) for h in self.privacy.accountant.history] if self.privacy is not None else [],
        }
        ckpt.save_checkpoint(
            directory,
            {n: p for n, p in self.named},
            self.base_optimizer if with_optimizer else None,
            self.names,
            ckpt.capture_rng(self.spec.device, self._noise),
            state,
        )

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def evaluate(self) -> dict[str, float]:
        """Validate, record it in the history, keep the best checkpoint, tell the callback."""
        progress, step = self.progress, self.progress.step
        metrics = evaluate(self.model, self.loss_fn, self.val_batches, self.spec) if self.val_batches else {}
        progress.history.append({"step": float(step), **{f"val_{k}": v for k, v in metrics.items()}})
        if metrics and (progress.best_val is None or metrics["loss"] < progress.best_val):
            progress.best_val, progress.best_step = metrics["loss"], step
            self.save(self.best_dir, with_optimizer=False)
        if self.callback is not None:
            tokens = step * self.tokens_per_step
            self.callback(StepEvent("eval", step, self.spec.total_steps, tokens, self.lr(step - 1), metrics, 0.0))
        return metrics

    def _dp_step(self, privacy: _Privacy) -> _StepMetrics:
        """One DP-SGD step on a Poisson-sampled batch: per-sample gradients, clipped and noised by the optimizer."""
        spec, loss_fn = self.spec, self.loss_fn
        indices = self.train_data.poisson_indices(self.progress.step, privacy.sample_rate, spec.seed)
        batch = self._batch(indices)

        def loss_of(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
            with _autocast(spec):
                return loss_fn(m, x)["loss"]

        total = dp_mod.per_sample_gradients(self.model, self.params, loss_of, batch)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        privacy.accountant.step(noise_multiplier=privacy.noise_multiplier, sample_rate=privacy.sample_rate)
        values = [total / max(1, len(indices)), float(len(indices))]
        return _StepMetrics.of(("loss", "batch_sequences"), torch.tensor(values, dtype=torch.float64))

    def _batch(self, indices: np.ndarray) -> torch.Tensor:
        """The training rows at `indices` on the run's device; to CUDA from pinned memory, because a copy from pageable
        memory may first wait for the device's queue."""
        rows = self.train_data.rows(indices)
        if self.spec.device.startswith("cuda"):
            rows = rows.pin_memory()
        return rows.to(self.spec.device, non_blocking=True)

    def _sgd_step(self) -> _StepMetrics:
        """One step on this process's share of the global batch; metrics averaged over the processes, left on the
        device (no host sync in the step)."""
        spec = self.spec
        indices = self.train_data.batch_indices(self.progress.step, spec.batch_size, spec.seed, self.rank, self.world)
        batch = self._batch(indices)
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(spec):
            parts = self.step_loss(batch)
        parts["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, spec.grad_clip)
        self.optimizer.step()
        packed = torch.stack([*(v.detach().float() for v in parts.values()), grad_norm.float()]).double()
        if self.world > 1:
            dist.all_reduce(packed)
            packed /= self.world
        return _StepMetrics.of((*parts, "grad_norm"), packed)

    def step(self) -> None:
        """One optimizer step; then the previous step's metrics are read and reported (the callback), so on a GPU the
        host queues a step while the device still runs the one before. A step that validates, checkpoints or ends the
        run has its own metrics read and reported at once, before the validation and the checkpoint."""
        spec, progress = self.spec, self.progress
        tick = time.perf_counter()
        lr = self.lr(progress.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        metrics = self._dp_step(self.privacy) if self.privacy is not None else self._sgd_step()
        progress.step += 1
        progress.steps_this_session += 1
        step = progress.step
        earlier, self.unread = self.unread, _Unread(step, lr, metrics)
        if earlier is not None:
            self._report(earlier, tick)
        else:
            progress.train_seconds += time.perf_counter() - tick
        evaluates = step % spec.eval_every == 0 and step < spec.total_steps
        checkpoints = step % spec.checkpoint_every == 0 and step < spec.total_steps
        if evaluates or checkpoints or step == spec.total_steps:
            self.settle()
        if evaluates:
            self.evaluate()
        if checkpoints:
            self.save(self.last_dir, with_optimizer=True)
            self.barrier()

    def settle(self) -> None:
        """Read and report the last step's metrics if they are still unread."""
        unread, self.unread = self.unread, None
        if unread is not None:
            self._report(unread, time.perf_counter())

    def _report(self, unread: _Unread, tick: float) -> None:
        """Wait for a step's metrics (counted as training time from `tick`), refuse a non-finite loss, tell the
        callback."""
        progress, spec = self.progress, self.spec
        values = unread.metrics.read()
        progress.train_seconds += time.perf_counter() - tick
        progress.train_metrics = {**values, "lr": unread.lr}
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(
                f"training loss is {values['loss']} at step {unread.step}; lower the learning rate"
            )
        if self.callback is not None:
            tokens_per_s = progress.steps_this_session * self.tokens_per_step / max(progress.train_seconds, 1e-9)
            tokens = unread.step * self.tokens_per_step
            event = StepEvent(
                "step", unread.step, spec.total_steps, tokens, unread.lr, progress.train_metrics, tokens_per_s
            )
            self.callback(event)

    def finish(self, memory: PeakWindow) -> TrainResult:
        """Validate at the end (unless the checkpoint was already the end), write the last checkpoint, report."""
        spec, progress = self.spec, self.progress
        self.settle()
        val_metrics = self.evaluate() if (progress.resumed_from != spec.total_steps) else {}
        if not val_metrics and progress.history:
            val_metrics = {k[4:]: v for k, v in progress.history[-1].items() if k.startswith("val_")}
        self.save(self.last_dir, with_optimizer=True)
        self.barrier()
        exported_step, export_reason = self.keep_best(val_metrics.get("loss"))
        privacy = self.privacy
        epsilon = None
        if privacy is not None and spec.dp is not None and privacy.accountant.history:
            epsilon = privacy.accountant.get_epsilon(spec.dp.target_delta)
        seconds = progress.train_seconds
        return TrainResult(
            steps=progress.step,
            tokens=progress.step * self.tokens_per_step,
            train_metrics=progress.train_metrics,
            val_loss=val_metrics.get("loss"),
            best_val_loss=progress.best_val,
            best_step=progress.best_step,
            epsilon=epsilon,
            noise_multiplier=privacy.noise_multiplier if privacy is not None else None,
            tokens_per_s=progress.steps_this_session * self.tokens_per_step / seconds if seconds else 0.0,
            train_seconds=seconds,
            last_dir=self.last_dir,
            best_dir=self.best_dir if progress.best_step is not None else None,
            resumed_from=progress.resumed_from,
            history=progress.history,
            peak_memory=memory.close(),
            exported_step=exported_step,
            export_reason=export_reason,
        )

    def keep_best(self, final_val: float | None) -> tuple[int, str]:
        """Load the best checkpoint's weights into the model when validation rose after it, so what the caller exports
        is the best model, not the last one (the last checkpoint stays as it is: resuming continues the run).

        Returns the step the model's weights are from and why."""
        progress, step = self.progress, self.progress.step
        best_step, best_val = progress.best_step, progress.best_val
        if final_val is None or best_step is None or best_val is None:
            return step, "last step (no validation)"
        if best_step == step or not best_val < final_val:
            return step, f"last step: validation {final_val:.4f} is the best"
        found = ckpt.find_checkpoint(self.best_dir)
        state = ckpt.verify(found) if found is not None else {}
        if found is None or state.get("step") != best_step or state.get("fingerprint") != self.fingerprint:
            raise ckpt.CheckpointError(
                f"{self.best_dir}: the best checkpoint (step {best_step}) is missing; rerun with resume=False"
            )
        weights = ckpt.load_weights(found)
        with torch.no_grad():
            for name, p in self.named:
                p.copy_(weights[name].to(p.device))
        return best_step, (
            f"best validation: {best_val:.4f} at step {best_step}, rose to {final_val:.4f} at the last step {step}"
        )


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
    """Train `model`'s trainable parameters for `spec.total_steps` optimizer steps; checkpoints go to
    out_dir/{last,best}.

    With `resume`, a complete checkpoint in out_dir/last with the same fingerprint is continued; a different fingerprint
    is refused (start fresh with resume=False). Under torch.distributed each process must call this with the same
    arguments; rank 0 writes the checkpoints.
    """
    rank, world = _world()
    _check_run(spec, train_data, world)
    fingerprint = spec.fingerprint(fingerprint_extra)
    memory = PeakWindow(spec.device)
    run = _Run(model, loss_fn, train_data, spec, Path(out_dir), (rank, world), fingerprint, callback)
    if resume:
        run.resume()
    run.prepare(val_data)
    while run.progress.step < spec.total_steps:
        run.step()
    return run.finish(memory)


def dense_loss(lm_z_weight: float) -> LossFn:
    """Next-token CE + LM z-loss for a plain causal LM on packed rows (M_pub, dense domain models)."""

    def loss_fn(model: nn.Module, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = model(input_ids=input_ids, use_cache=False).logits
        ce, lm_z = packed_lm_losses(logits, input_ids)
        return {"loss": ce + lm_z_weight * lm_z, "ce": ce, "lm_z": lm_z}

    return loss_fn


def coordinated_loss(model: nn.Module, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The coordinated expert model's own loss (CE + LM z-loss + router z-loss, weights set at construction).

    In evaluation (model.eval()) it also reports the per-layer diagnostics of `CoordinatedExpertModel.diagnostics`
    (router mass on FFN_i, bias, FFN_i's update norm): `evaluate` averages them over the validation batches, so every
    validation step records them in the history and the logger as `val_router_mass_l<i>` etc."""
    out = model(input_ids)
    parts = {"loss": out.loss, "ce": out.ce, "lm_z": out.lm_z, "router_z": out.router_z}
    diagnostics = getattr(getattr(model, "module", model), "diagnostics", None)  # DDP wraps the model
    if not model.training and callable(diagnostics):
        parts.update(diagnostics())
    return parts
