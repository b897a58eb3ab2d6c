"""What a training step reports: the flat parameters it logs, its final metrics (numbers only, so MLflow and the
headless summary take them as they are), and the `TrainOutcome` written as train_result.json beside its artifact."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from model.batching import PackedDataset
from model.training import TrainResult, TrainSpec
from tasks.core.artifacts import TRAIN_RESULT_FILE
from tasks.training.inputs import epochs


@dataclass
class TrainOutcome:
    """What a training step produced: where, its sha256, and its final metrics (numbers only)."""

    kind: str  # public | expert | dense
    domain: str
    sha256: str
    metrics: dict[str, float]
    checkpoint_dir: str
    model_dir: str | None = None  # save_pretrained directory (public, dense)
    expert_file: str | None = None  # expert.safetensors (expert)
    dp_epsilon: float | None = None
    resumed_from: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    exported_step: int | None = None  # the step the exported weights are from (the best validation's if it rose after)
    export_reason: str = ""
    # every validation: step, val_loss, val_ce, ... and for an expert, per layer, val_router_mass_l<i> (router
    # probability on FFN_i), val_bias_l<i> and val_ffn_update_l<i> (||FFN_i - FFN_pub|| / ||FFN_pub||)
    history: list[dict[str, float]] = field(default_factory=list)


def run_metrics(result: TrainResult) -> dict[str, float]:
    """The run's final train metrics, size, speed, validation loss, own peak memory and DP accounting."""
    out = {f"final_train_{k}": float(v) for k, v in result.train_metrics.items()}
    out.update(
        steps=float(result.steps),
        tokens=float(result.tokens),
        tokens_per_s=result.tokens_per_s,
        train_seconds=result.train_seconds,
    )
    if result.val_loss is not None:
        out["val_loss"] = result.val_loss
    if result.exported_step is not None:
        out["exported_step"] = float(result.exported_step)
    if result.best_val_loss is not None:
        out["best_val_loss"] = result.best_val_loss
    if result.peak_memory is not None:  # this run's own peak (model.memory): exact, or sampled when it set no record
        out["peak_rss_gib"] = result.peak_memory.rss_gib
        out["peak_rss_exact"] = float(result.peak_memory.exact)
        if result.peak_memory.device_gib is not None:
            out["peak_cuda_gib"] = result.peak_memory.device_gib
    if result.epsilon is not None:
        out["dp_epsilon"] = float(result.epsilon)
    if result.noise_multiplier is not None:
        out["dp_noise_multiplier"] = float(result.noise_multiplier)
    return out


def export_fields(result: TrainResult) -> dict[str, Any]:
    """The TrainOutcome fields that say which weights were exported and why, and the validation history."""
    return {"exported_step": result.exported_step, "export_reason": result.export_reason, "history": result.history}


def flat_params(
    kind: str, domain: str, spec: TrainSpec, train_data: PackedDataset, extra: dict[str, Any]
) -> dict[str, Any]:
    """The settings a run logs (MLflow params, train_result.json), with the passes it makes over its split."""
    return {
        "kind": kind,
        "domain": domain,
        "steps": spec.total_steps,
        "batch_size": spec.batch_size,
        "seq_len": spec.seq_len,
        "lr": spec.lr,
        "weight_decay": spec.weight_decay,
        "warmup_steps": spec.warmup_steps,
        "min_lr_ratio": spec.min_lr_ratio,
        "grad_clip": spec.grad_clip,
        "device": spec.device,
        "precision": spec.precision,
        "train_sequences": train_data.num_sequences,
        "epochs": round(epochs(spec.total_steps, spec.batch_size, train_data), 4),
        "unused_tail_tokens": train_data.tail_tokens,
        "dp": spec.dp is not None,
        **extra,
    }


def write_result(directory: Path, outcome: TrainOutcome) -> None:
    """train_result.json: the outcome beside the artifact, for the headless summary and the registry."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / TRAIN_RESULT_FILE).write_text(
        json.dumps(asdict(outcome), indent=2, sort_keys=True, default=str), encoding="utf-8"
    )
