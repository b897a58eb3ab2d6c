"""Dense training: public pretraining of M_pub on data/public, and the dense domain model (all of M_pub's parameters
continued on one owner's data, for the baselines and the extraction study). Both export a save_pretrained directory.
With an existing model as M_pub (`anchor`), public pretraining adopts it instead (`tasks.training.anchor`) and the dense
domain models are continued pretraining of that model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from model.hashing import sha256_file
from model.training import StepEvent, TrainResult, dense_loss
from tasks.core import build
from tasks.core.artifacts import WEIGHTS_FILE, RunPaths
from tasks.core.config import Profile
from tasks.core.errors import DataError
from tasks.core.train_logging import ConsoleLogger, TrainLogger
from tasks.training.anchor import adopt_anchor
from tasks.training.inputs import PUBLIC, data_digest, owner_inputs, public_inputs, token_ids
from tasks.training.outcome import TrainOutcome, export_fields, flat_params, run_metrics, write_result
from tasks.training.progress import TrainJob, drop_checkpoints, run_training
from tasks.training.runtime import setup_runtime


def train_public(
    profile: Profile,
    *,
    resume: bool = True,
    logger: TrainLogger | None = None,
    callback: Callable[[StepEvent], None] | None = None,
) -> TrainOutcome:
    """Pretrain M_pub on data/public/train.parquet; writes RunPaths.public_dir/{ckpt,model}. With an anchor, adopt it
    as M_pub (no training run)."""
    from model.public import build_public_model

    if profile.anchor.pretrained:
        return adopt_anchor(profile, logger)
    cfg = profile.train_public
    paths = RunPaths(profile)
    data = public_inputs(profile)
    device, rank, _ = setup_runtime(profile)
    spec = build.train_spec(profile, cfg, data.steps, device)
    sizes = build.model_sizes(profile)
    model = build_public_model(sizes, token_ids(data.tokenizer), profile.seed)
    extra = json.dumps(sizes.__dict__, sort_keys=True) + data_digest(data.train, data.val) + str(cfg.lm_z_loss)
    params = flat_params("public", PUBLIC, spec, data.train, {"lm_z_loss": cfg.lm_z_loss, **sizes.__dict__})
    job = TrainJob(
        "train-public", model, dense_loss(cfg.lm_z_loss), data, spec, paths.public_dir / "ckpt", params, extra
    )
    result = run_training(job, resume=resume, logger=logger, callback=callback, rank=rank)
    return _finish("public", PUBLIC, model, result, paths.public_model_dir, paths, params, rank, logger)


def train_dense(
    profile: Profile,
    domain: str,
    *,
    resume: bool = True,
    logger: TrainLogger | None = None,
    callback: Callable[[StepEvent], None] | None = None,
) -> TrainOutcome:
    """Dense domain model: all of M_pub's parameters continued on data/<domain> (baselines, extraction study).

    Same budget, batch and schedule as the expert; weight decay `train_expert.dense_weight_decay` as in pretraining.
    """
    cfg = profile.train_expert
    paths = RunPaths(profile)
    data = owner_inputs(profile, domain)
    model, public_sha = trained_public_model(profile)
    device, rank, _ = setup_runtime(profile)
    spec = build.train_spec(profile, cfg, data.steps, device, weight_decay=cfg.dense_weight_decay)
    extra = public_sha + data_digest(data.train, data.val) + str(cfg.lm_z_loss)
    params = flat_params("dense", domain, spec, data.train, {"public_sha256": public_sha, "lm_z_loss": cfg.lm_z_loss})
    ckpt_dir = paths.dense_dir(domain) / "ckpt"
    job = TrainJob(f"train-dense {domain}", model, dense_loss(cfg.lm_z_loss), data, spec, ckpt_dir, params, extra)
    result = run_training(job, resume=resume, logger=logger, callback=callback, rank=rank)
    outcome = _finish("dense", domain, model, result, paths.dense_dir(domain) / "model", paths, params, rank, logger)
    drop_checkpoints(job.ckpt_dir, cfg.keep_checkpoints, rank)
    return outcome


def trained_public_model(profile: Profile) -> tuple[Any, str]:
    """M_pub and the sha256 of its weights; a clear error when public pretraining has not run."""
    from model.public import load_public_model

    model_dir = RunPaths(profile).public_model_dir
    weights = model_dir / WEIGHTS_FILE
    if not weights.exists():
        raise DataError(f"{weights}: M_pub is missing; run `flexo train-public` first")
    return load_public_model(str(model_dir)), sha256_file(weights)


def _finish(
    kind: str,
    domain: str,
    model: torch.nn.Module,
    result: TrainResult,
    model_dir: Path,
    paths: RunPaths,
    params: dict[str, Any],
    rank: int,
    logger: TrainLogger | None,
) -> TrainOutcome:
    """Export the trained model with the tokenizer (rank 0), record the outcome beside it and log the final metrics."""
    from model.export import export_pretrained

    metrics = run_metrics(result)
    sha = export_pretrained(model.cpu(), model_dir, paths.tokenizer_dir) if rank == 0 else ""
    outcome = TrainOutcome(
        kind=kind,
        domain=domain,
        sha256=sha,
        metrics=metrics,
        checkpoint_dir=str(result.last_dir.parent),
        model_dir=str(model_dir),
        resumed_from=result.resumed_from,
        params=params,
        **export_fields(result),
    )
    if rank == 0:
        write_result(model_dir.parent, outcome)
        log = logger or ConsoleLogger(prefix=kind)
        log.log_metrics(metrics, result.steps)
        log.log_params({"export_reason": result.export_reason})
    return outcome
