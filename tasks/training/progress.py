"""Running one training job: its settings logged, a progress bar on stderr, evaluations and train metrics sent to the
logger, and the trainer's refusals (a checkpoint of another run, a bad setting) turned into ConfigErrors."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.checkpoint import CheckpointError
from model.training import StepEvent, TrainResult, TrainSpec, train
from tasks.core.errors import ConfigError, FlexoError
from tasks.core.train_logging import ConsoleLogger, TrainLogger
from tasks.training.inputs import TrainInputs


@dataclass(frozen=True)
class TrainJob:
    """Everything `model.training.train` needs for one run; `fingerprint_extra` ties its checkpoints to these inputs
    (resuming from a checkpoint of other data, rows or model sizes is refused)."""

    title: str
    model: torch.nn.Module
    loss_fn: Any
    data: TrainInputs
    spec: TrainSpec
    ckpt_dir: Path
    params: dict[str, Any]
    fingerprint_extra: str


class RichProgress:
    """The progress callback: a rich bar with tokens/s, loss and ETA; evaluations go to the logger."""

    def __init__(self, title: str, total_steps: int, logger: TrainLogger, enabled: bool, log_every: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.logger = logger
        self.log_every = log_every
        self.progress = Progress(
            TextColumn(f"[bold]{title}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
            disable=not enabled,
            console=Console(stderr=True),  # stdout stays clean for the command's JSON result
        )
        self.task = self.progress.add_task(title, total=total_steps, stats="")

    def __enter__(self) -> RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: StepEvent) -> None:
        if event.kind == "eval":
            self.logger.log_metrics({f"val_{k}": v for k, v in event.metrics.items()}, event.step)
            return
        stats = f"loss {event.metrics['loss']:.3f}  lr {event.lr:.2e}  {event.tokens_per_s:,.0f} tok/s"
        self.progress.update(self.task, completed=event.step, stats=stats)
        if event.step % self.log_every == 0:
            metrics = {f"train_{k}": v for k, v in event.metrics.items()}
            self.logger.log_metrics({**metrics, "train_tokens_per_s": event.tokens_per_s}, event.step)


def run_training(
    job: TrainJob,
    *,
    resume: bool,
    logger: TrainLogger | None,
    callback: Callable[[StepEvent], None] | None,
    rank: int,
) -> TrainResult:
    """Log the settings, train with a progress bar (rank 0 only), and turn a refused checkpoint into a ConfigError."""
    logger = logger or ConsoleLogger(prefix=job.title)
    if rank == 0:
        logger.log_params(job.params)
    log_every = max(1, min(job.spec.eval_every, 10))
    with RichProgress(job.title, job.spec.total_steps, logger, enabled=rank == 0, log_every=log_every) as bar:

        def on_event(event: StepEvent) -> None:
            if rank == 0:
                bar(event)
            if callback is not None:
                callback(event)

        try:
            return train(
                job.model,
                job.loss_fn,
                job.data.train,
                job.data.val,
                job.spec,
                job.ckpt_dir,
                resume=resume,
                fingerprint_extra=job.fingerprint_extra,
                callback=on_event,
            )
        except CheckpointError as exc:
            raise ConfigError(f"{exc}") from exc
        except ValueError as exc:
            if isinstance(exc, FlexoError):
                raise
            raise ConfigError(str(exc)) from exc


def drop_checkpoints(ckpt_dir: Path, keep: bool, rank: int) -> None:
    """Remove a finished training's ckpt/ (resume state and optimizer moments) unless `keep`. Call only after the
    model is exported and its result written: until then the checkpoint is what a failed export resumes from."""
    if not keep and rank == 0:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
