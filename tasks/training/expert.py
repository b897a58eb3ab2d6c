"""Coordinated expert training: one owner's FFNs and router row trained against the frozen M_pub on data/<domain>
only (invariant 1), written as the expert file, its card and train_result.json.

The router rows come from the router step (`tasks.training.route`); an `ExpertSetting` swaps them (and the bias) for
the router ablations, with everything else (data, budget, schedule, M_pub) exactly the normal expert's.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.dp import DPSpec
from model.training import StepEvent, TrainResult, coordinated_loss
from tasks.core import build
from tasks.core.artifacts import EXPERT_CARD_FILE, EXPERT_FILE, RunPaths
from tasks.core.config import Profile, TrainExpertConfig
from tasks.core.errors import DataError
from tasks.core.train_logging import ConsoleLogger, TrainLogger
from tasks.training.dense import trained_public_model
from tasks.training.expert_file import save_expert
from tasks.training.inputs import PUBLIC, data_digest, owner_inputs
from tasks.training.outcome import TrainOutcome, export_fields, flat_params, run_metrics, write_result
from tasks.training.progress import TrainJob, drop_checkpoints, run_training
from tasks.training.route import embed_domain, load_router_embedding
from tasks.training.runtime import setup_runtime


@dataclass(frozen=True)
class ExpertSetting:
    """A non-default way to train an expert (the router ablations, `tasks.training.ablations`): its own output
    directory, router rows and bias. Everything else (data, budget, schedule, M_pub) is the normal expert's, so the
    comparison is fair."""

    label: str
    out_dir: Path
    r_pub: torch.Tensor
    r_expert: torch.Tensor
    bias_init: float | None


def domain_router_row(profile: Profile, domain: str) -> torch.Tensor:
    """r_<domain>, computed from data/<domain>/train.parquet by the router step when it is not there yet."""
    path = RunPaths(profile).router_embedding(domain)
    if not path.exists():
        path = embed_domain(profile, domain)
    row = load_router_embedding(path)
    if tuple(row.shape) != (profile.model.hidden_size,):
        raise DataError(
            f"{path}: router row has shape {tuple(row.shape)}, expected ({profile.model.hidden_size},); "
            "delete it and re-run the router step"
        )
    return row


def train_expert(
    profile: Profile,
    domain: str,
    *,
    resume: bool = True,
    dp: bool | None = None,
    logger: TrainLogger | None = None,
    callback: Callable[[StepEvent], None] | None = None,
    setting: ExpertSetting | None = None,
) -> TrainOutcome:
    """Coordinated training of expert <domain> against the frozen M_pub; writes
    RunPaths.expert_dir(domain)/expert.safetensors.

    `dp` overrides train_expert.dp.enabled (DP-SGD with Opacus; the accountant's epsilon is in the metrics).
    `setting` trains an ablation variant instead (other rows/bias, written to `setting.out_dir`).
    """
    from model.coordinated import CoordinatedExpertModel

    cfg = profile.train_expert
    data = owner_inputs(profile, domain)
    public_model, public_sha = trained_public_model(profile)
    r_pub, r_expert, bias_init = _router_rows(profile, domain, setting)
    dp_spec = build.dp_spec(profile, dp)
    device, rank, _ = setup_runtime(profile)
    spec = build.train_spec(profile, cfg, data.steps, device, dp=dp_spec)
    model = CoordinatedExpertModel.from_public(
        public_model, r_pub, r_expert, bias_init=bias_init, lm_z_weight=cfg.lm_z_loss, router_z_weight=cfg.router_z_loss
    )
    extra = public_sha + data_digest(data.train, data.val) + f"{bias_init}/{cfg.lm_z_loss}/{cfg.router_z_loss}"
    extra += hashlib.sha256(torch.cat([r_pub, r_expert]).numpy().tobytes()).hexdigest()
    trainable = sum(p.numel() for p in model.trainable_parameters())
    extras = _expert_params(cfg, public_sha, bias_init, trainable, dp_spec)
    params = flat_params("expert", domain, spec, data.train, extras)
    out_dir = RunPaths(profile).expert_dir(domain) if setting is None else setting.out_dir
    title = f"train-expert {domain}" + (f" ({setting.label})" if setting else "")
    job = TrainJob(title, model, coordinated_loss, data, spec, out_dir / "ckpt", params, extra)
    result = run_training(job, resume=resume, logger=logger, callback=callback, rank=rank)
    model.cpu()
    model.assert_frozen_unchanged(public_model, r_pub)
    label = setting.label if setting is not None else None
    sha = _save(model, result, out_dir, domain, public_sha, dp_spec, label) if rank == 0 else ""
    outcome = TrainOutcome(
        kind="expert",
        domain=domain,
        sha256=sha,
        metrics=run_metrics(result),
        checkpoint_dir=str(out_dir / "ckpt"),
        expert_file=str(out_dir / EXPERT_FILE),
        dp_epsilon=result.epsilon,
        resumed_from=result.resumed_from,
        params=params,
        **export_fields(result),
    )
    if rank == 0:
        _write_card(profile, outcome, out_dir, public_sha, dp_spec)
        write_result(out_dir, outcome)
        log = logger or ConsoleLogger(prefix=f"expert {domain}")
        log.log_metrics(outcome.metrics, result.steps)
        log.log_params({"export_reason": result.export_reason})
    drop_checkpoints(job.ckpt_dir, cfg.keep_checkpoints, rank)
    return outcome


def _router_rows(
    profile: Profile, domain: str, setting: ExpertSetting | None
) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    """(r_pub, r_<domain>, bias_init): the router step's rows and `train_expert.bias_init`, or the setting's."""
    if setting is not None:
        return setting.r_pub, setting.r_expert, setting.bias_init
    return domain_router_row(profile, PUBLIC), domain_router_row(profile, domain), profile.train_expert.bias_init


def _expert_params(
    cfg: TrainExpertConfig, public_sha: str, bias_init: float | None, trainable: int, dp_spec: DPSpec | None
) -> dict[str, Any]:
    """The expert's own logged settings, beside the common ones of `flat_params`."""
    dp_params = (
        {
            "dp_target_epsilon": dp_spec.target_epsilon,
            "dp_target_delta": dp_spec.target_delta,
            "dp_max_grad_norm": dp_spec.max_grad_norm,
        }
        if dp_spec
        else {}
    )
    return {
        "public_sha256": public_sha,
        "bias_init": bias_init,
        "lm_z_loss": cfg.lm_z_loss,
        "router_z_loss": cfg.router_z_loss,
        "trainable_parameters": trainable,
        **dp_params,
    }


def _save(
    model: Any,
    result: TrainResult,
    out_dir: Path,
    domain: str,
    public_sha: str,
    dp_spec: DPSpec | None,
    ablation: str | None,
) -> str:
    """Write the expert file (metadata: M_pub's sha256, steps, DP and its epsilon, the ablation); returns its sha256."""
    meta = {"steps": str(result.steps), "tokens": str(result.tokens), "dp": str(dp_spec is not None)}
    meta["exported_step"] = str(result.exported_step)
    if ablation is not None:
        meta["ablation"] = ablation
    if result.epsilon is not None and dp_spec is not None:
        meta.update(dp_epsilon=f"{result.epsilon:.6g}", dp_delta=str(dp_spec.target_delta))
    return save_expert(model.expert_state(), out_dir / EXPERT_FILE, domain=domain, public_sha256=public_sha, **meta)


def _write_card(
    profile: Profile, outcome: TrainOutcome, out_dir: Path, public_sha: str, dp_spec: DPSpec | None
) -> None:
    """expert_card.json: what the owner's registration and the assembly check read (owner, hashes, metrics, DP)."""
    card = {
        "domain": outcome.domain,
        "owner": profile.domains[outcome.domain].owner,
        "public_sha256": public_sha,
        "sha256": outcome.sha256,
        "metrics": outcome.metrics,
        "dp_epsilon": outcome.dp_epsilon,
        "dp_delta": dp_spec.target_delta if dp_spec else None,
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out_dir / EXPERT_CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True), encoding="utf-8")
