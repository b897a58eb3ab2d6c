"""Training steps: public pretraining (M_pub), coordinated expert training, dense domain training.

Why here and not in model/: these functions know the project's layout (params.yaml, data/<domain>/*.parquet, the
tokenizer, RunPaths); `model.training` knows only tensors. Each step validates everything it can *before* compute starts
(splits present, text usable, budget at least one batch, tokenizer fits the model), tokenizes the split, builds the model,
trains with resume, writes its artifact and returns a small JSON-able `TrainOutcome`.

Isolation (invariant 1): `train_public` reads only data/public; `train_expert`/`train_dense` read only data/<domain>
(plus M_pub and the router rows, which are public).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from model.batching import PackedDataset, pack_documents
from model.checkpoint import CheckpointError
from model.config import ModelSizes, TokenizerIds
from model.dp import DPSpec
from model.hashing import sha256_file
from model.precision import resolve_precision
from model.schedule import warmup_steps_for
from model.training import StepEvent, TrainResult, TrainSpec, coordinated_loss, dense_loss, train
from tasks.core.artifacts import RunPaths
from tasks.core.config import OptimConfig, Profile
from tasks.core.errors import ConfigError, DataError, FlexoError
from tasks.core.train_logging import ConsoleLogger, TrainLogger

PUBLIC = "public"
RESULT_FILE = "train_result.json"
EXPERT_FILE = "expert.safetensors"
CARD_FILE = "expert_card.json"


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


# ---- inputs -----------------------------------------------------------------------------------------------------


def load_tokenizer(profile: Profile):
    """The project tokenizer (data/tokenizer), checked against the model's vocabulary."""
    from transformers import AutoTokenizer

    directory = RunPaths(profile).tokenizer_dir
    if not (directory / "tokenizer.json").exists() and not (directory / "tokenizer_config.json").exists():
        raise DataError(f"{directory}: no tokenizer; run the data stage (`flexo data`) to train it on the public split")
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id is None:
        raise DataError(f"{directory}: the tokenizer defines no eos_token/pad_token; retrain it with both")
    if len(tokenizer) > profile.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size ({profile.model.vocab_size}) is smaller than the tokenizer's {len(tokenizer)} tokens "
            f"({directory}); raise model.vocab_size or retrain the tokenizer"
        )
    return tokenizer


def token_ids(tokenizer) -> TokenizerIds:
    return TokenizerIds(tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id)


def read_texts(profile: Profile, domain: str, split: str) -> list[str]:
    """The `text` column of data/<domain>/<split>.parquet; a missing file, column or empty/null row is a DataError."""
    path = RunPaths(profile).split(domain, split)
    if not path.exists():
        raise DataError(f"{path}: the {split} split of '{domain}' is missing; run `flexo data` for '{domain}' first")
    frame = pd.read_parquet(path)
    if "text" not in frame.columns:
        raise DataError(f"{path}: no `text` column (columns: {list(frame.columns)})")
    texts = frame["text"]
    bad = [int(i) for i in np.flatnonzero(texts.isna().to_numpy() | (texts.astype(str).str.len() == 0).to_numpy())]
    if bad:
        raise DataError(f"{path}: row(s) {bad[:5]} have an empty or null `text`; fix or re-run the data stage")
    if len(texts) == 0:
        raise DataError(f"{path}: the split has no rows")
    return texts.astype(str).tolist()


def tokenize(tokenizer, texts: list[str], seq_len: int, batch: int = 256) -> PackedDataset:
    """Tokenize (no special tokens), end each document with EOS, pack into `seq_len` rows."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), batch):
        ids.extend(tokenizer(texts[start : start + batch], add_special_tokens=False)["input_ids"])
    return PackedDataset(pack_documents(ids, tokenizer.eos_token_id), seq_len)


def data_digest(*datasets: PackedDataset) -> str:
    """sha256 of the packed token streams: part of the resume fingerprint (other data = another run)."""
    digest = hashlib.sha256()
    for data in datasets:
        digest.update(np.ascontiguousarray(data.tokens).tobytes())
    return digest.hexdigest()


def check_budget(
    section: str,
    tokens: int,
    batch_size: int,
    seq_len: int,
    train: PackedDataset,
    split_path: Path,
    max_epochs: float | None = None,
) -> int:
    """Optimizer steps for the budget, at most `max_epochs` passes over `train` (at least one step); a budget below one
    batch or a split smaller than one batch is refused."""
    per_step = batch_size * seq_len
    steps = tokens // per_step
    if steps < 1:
        raise ConfigError(
            f"{section}: token budget {tokens} is below one batch ({batch_size} x {seq_len} = {per_step})"
        )
    if train.num_sequences < batch_size:
        raise DataError(
            f"{split_path}: only {train.num_sequences} sequences of {seq_len} tokens ({len(train.tokens)} tokens), fewer "
            f"than one batch of {batch_size}; add data or lower {section}.batch_size"
        )
    if max_epochs is not None:
        steps = min(steps, max(1, int(max_epochs * train.num_sequences) // batch_size))
    return steps


def epochs(steps: int, batch_size: int, train: PackedDataset) -> float:
    """Passes over the train split that `steps` optimizer steps make (recorded with every run: a reviewer sees repetition)."""
    return steps * batch_size / train.num_sequences


# ---- runtime ----------------------------------------------------------------------------------------------------


def resolve_device(profile: Profile) -> str:
    wanted = profile.runtime.device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device is 'cuda' but no CUDA device is available; set runtime.device: auto or cpu")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return wanted


def setup_runtime(profile: Profile) -> tuple[str, int, int]:
    """Threads, device, and torch.distributed when launched by torchrun (gloo on CPU, nccl on CUDA): (device, rank, world)."""
    if profile.runtime.num_threads:
        torch.set_num_threads(profile.runtime.num_threads)
    device = resolve_device(profile)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            if device.startswith("cuda"):
                torch.cuda.set_device(torch.device(device))
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        return device, dist.get_rank(), dist.get_world_size()
    return device, 0, 1


def make_spec(
    profile: Profile,
    optim: OptimConfig,
    steps: int,
    batch_size: int,
    seq_len: int,
    eval_every: int,
    checkpoint_every: int,
    eval_batches: int,
    device: str,
    weight_decay: float | None = None,
    dp: DPSpec | None = None,
) -> TrainSpec:
    return TrainSpec(
        total_steps=steps,
        batch_size=batch_size,
        seq_len=seq_len,
        lr=optim.lr,
        betas=tuple(optim.betas),
        weight_decay=optim.weight_decay if weight_decay is None else weight_decay,
        warmup_steps=warmup_steps_for(steps, optim.warmup_fraction),
        min_lr_ratio=optim.min_lr_ratio,
        grad_clip=optim.grad_clip,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        eval_batches=eval_batches,
        seed=profile.seed,
        device=device,
        precision=resolve_precision(profile.runtime.precision, device),
        dp=dp,
        compile=profile.runtime.compile,
    )


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


def _run(
    title: str,
    model: torch.nn.Module,
    loss_fn,
    train_data: PackedDataset,
    val_data: PackedDataset,
    spec: TrainSpec,
    ckpt_dir: Path,
    params: dict[str, Any],
    fingerprint_extra: str,
    resume: bool,
    logger: TrainLogger | None,
    callback: Callable[[StepEvent], None] | None,
    rank: int,
) -> TrainResult:
    """Log the settings, train with a progress bar, and turn a refused checkpoint into a ConfigError."""
    logger = logger or ConsoleLogger(prefix=title)
    if rank == 0:
        logger.log_params(params)
    log_every = max(1, min(spec.eval_every, 10))
    with RichProgress(title, spec.total_steps, logger, enabled=rank == 0, log_every=log_every) as bar:

        def on_event(event: StepEvent) -> None:
            if rank == 0:
                bar(event)
            if callback is not None:
                callback(event)

        try:
            return train(
                model,
                loss_fn,
                train_data,
                val_data,
                spec,
                ckpt_dir,
                resume=resume,
                fingerprint_extra=fingerprint_extra,
                callback=on_event,
            )
        except CheckpointError as exc:
            raise ConfigError(f"{exc}") from exc
        except ValueError as exc:
            if isinstance(exc, FlexoError):
                raise
            raise ConfigError(str(exc)) from exc


def _metrics(result: TrainResult, prefix: str = "") -> dict[str, float]:
    out = {f"final_train_{k}": float(v) for k, v in result.train_metrics.items()}
    out.update(
        steps=float(result.steps),
        tokens=float(result.tokens),
        tokens_per_s=result.tokens_per_s,
        train_seconds=result.train_seconds,
    )
    if result.val_loss is not None:
        out["val_loss"] = result.val_loss
    if result.best_val_loss is not None:
        out["best_val_loss"] = result.best_val_loss
    if result.peak_memory is not None:  # this run's own peak (model.memory): exact, or sampled when it set no record
        out["peak_rss_gib"] = result.peak_memory.rss_gib
        out["peak_rss_exact"] = float(result.peak_memory.exact)
        if result.peak_memory.device_gib is not None:
            out["peak_cuda_gib"] = result.peak_memory.device_gib
    if result.epsilon is not None:
        out["dp_epsilon"] = float(result.epsilon)
        out["dp_noise_multiplier"] = float(result.noise_multiplier)
    return out


def _write_result(directory: Path, outcome: TrainOutcome) -> None:
    from dataclasses import asdict

    directory.mkdir(parents=True, exist_ok=True)
    (directory / RESULT_FILE).write_text(
        json.dumps(asdict(outcome), indent=2, sort_keys=True, default=str), encoding="utf-8"
    )


def _flat_params(
    kind: str, domain: str, spec: TrainSpec, train_data: PackedDataset, extra: dict[str, Any]
) -> dict[str, Any]:
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


# ---- the three steps --------------------------------------------------------------------------------------------


def train_public(
    profile: Profile,
    *,
    resume: bool = True,
    logger: TrainLogger | None = None,
    callback: Callable[[StepEvent], None] | None = None,
) -> TrainOutcome:
    """Pretrain M_pub on data/public/train.parquet; writes RunPaths.public_dir/{ckpt,model}."""
    from model.public import build_public_model

    cfg = profile.train_public
    paths = RunPaths(profile)
    resolve_device(profile)  # a device this machine lacks is a config error before any compute
    tokenizer = load_tokenizer(profile)
    train_data = tokenize(tokenizer, read_texts(profile, PUBLIC, "train"), cfg.seq_len)
    val_data = tokenize(tokenizer, read_texts(profile, PUBLIC, "val"), cfg.seq_len)
    steps = check_budget(
        "train_public.tokens", cfg.tokens, cfg.batch_size, cfg.seq_len, train_data, paths.split(PUBLIC, "train")
    )
    device, rank, _ = setup_runtime(profile)
    spec = make_spec(
        profile,
        cfg.optim,
        steps,
        cfg.batch_size,
        cfg.seq_len,
        cfg.eval_every,
        cfg.checkpoint_every,
        cfg.eval_batches,
        device,
    )
    sizes = ModelSizes.from_mapping(profile.model)
    model = build_public_model(sizes, token_ids(tokenizer), profile.seed)
    extra = json.dumps(sizes.__dict__, sort_keys=True) + data_digest(train_data, val_data) + str(cfg.lm_z_loss)
    params = _flat_params("public", PUBLIC, spec, train_data, {"lm_z_loss": cfg.lm_z_loss, **sizes.__dict__})
    result = _run(
        "train-public",
        model,
        dense_loss(cfg.lm_z_loss),
        train_data,
        val_data,
        spec,
        paths.public_dir / "ckpt",
        params,
        extra,
        resume,
        logger,
        callback,
        rank,
    )
    return _finish_dense("public", PUBLIC, model, result, paths.public_model_dir, paths, params, rank, logger)


def _finish_dense(
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
    from model.export import export_pretrained

    metrics = _metrics(result)
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
    )
    if rank == 0:
        _write_result(model_dir.parent, outcome)
        (logger or ConsoleLogger(prefix=kind)).log_metrics(metrics, result.steps)
    return outcome


def trained_public_model(profile: Profile):
    """M_pub and the sha256 of its weights; a clear error when public pretraining has not run."""
    from model.public import load_public_model

    model_dir = RunPaths(profile).public_model_dir
    weights = model_dir / "model.safetensors"
    if not weights.exists():
        raise DataError(f"{weights}: M_pub is missing; run `flexo train-public` first")
    return load_public_model(str(model_dir)), sha256_file(weights)


def _expert_setup(profile: Profile, domain: str) -> tuple[Any, PackedDataset, PackedDataset, int]:
    if domain not in profile.closed_domains:
        raise ConfigError(f"'{domain}' is not a data owner's domain; choose one of {profile.closed_domains}")
    resolve_device(profile)  # before the tokenizing and the router embedding
    cfg = profile.train_expert
    tokenizer = load_tokenizer(profile)
    train_data = tokenize(tokenizer, read_texts(profile, domain, "train"), cfg.seq_len)
    val_data = tokenize(tokenizer, read_texts(profile, domain, "val"), cfg.seq_len)
    steps = check_budget(
        "train_expert.token_ratio x train_public.tokens",
        profile.expert_tokens(),
        cfg.batch_size,
        cfg.seq_len,
        train_data,
        RunPaths(profile).split(domain, "train"),
        cfg.max_epochs,
    )
    return tokenizer, train_data, val_data, steps


def domain_router_row(profile: Profile, domain: str) -> torch.Tensor:
    """r_<domain>, computed from data/<domain>/train.parquet by the router step when it is not there yet."""
    from tasks.training.route import embed_domain, load_router_embedding

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


@dataclass(frozen=True)
class ExpertSetting:
    """A non-default way to train an expert (the router ablations, `tasks.training.ablations`): its own output directory, router
    rows and bias. Everything else (data, budget, schedule, M_pub) is the normal expert's, so the comparison is fair."""

    label: str
    out_dir: Path
    r_pub: torch.Tensor
    r_expert: torch.Tensor
    bias_init: float | None


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
    """Coordinated training of expert <domain> against the frozen M_pub; writes RunPaths.expert_dir(domain)/expert.safetensors.

    `dp` overrides train_expert.dp.enabled (DP-SGD with Opacus; the accountant's epsilon is in the metrics).
    `setting` trains an ablation variant instead (other rows/bias, written to `setting.out_dir`).
    """
    from model.coordinated import CoordinatedExpertModel
    from tasks.training.expert_file import save_expert

    cfg = profile.train_expert
    paths = RunPaths(profile)
    _, train_data, val_data, steps = _expert_setup(profile, domain)
    public_model, public_sha = trained_public_model(profile)
    if setting is None:
        r_pub, r_expert, bias_init = (
            domain_router_row(profile, PUBLIC),
            domain_router_row(profile, domain),
            cfg.bias_init,
        )
    else:
        r_pub, r_expert, bias_init = setting.r_pub, setting.r_expert, setting.bias_init
    use_dp = cfg.dp.enabled if dp is None else dp
    dp_spec = DPSpec(cfg.dp.target_epsilon, cfg.dp.target_delta, cfg.dp.max_grad_norm) if use_dp else None
    device, rank, _ = setup_runtime(profile)
    spec = make_spec(
        profile,
        cfg.optim,
        steps,
        cfg.batch_size,
        cfg.seq_len,
        cfg.eval_every,
        cfg.checkpoint_every,
        cfg.eval_batches,
        device,
        dp=dp_spec,
    )
    model = CoordinatedExpertModel.from_public(
        public_model, r_pub, r_expert, bias_init=bias_init, lm_z_weight=cfg.lm_z_loss, router_z_weight=cfg.router_z_loss
    )
    extra = public_sha + data_digest(train_data, val_data) + f"{bias_init}/{cfg.lm_z_loss}/{cfg.router_z_loss}"
    extra += hashlib.sha256(torch.cat([r_pub, r_expert]).numpy().tobytes()).hexdigest()
    params = _flat_params(
        "expert",
        domain,
        spec,
        train_data,
        {
            "public_sha256": public_sha,
            "bias_init": bias_init,
            "lm_z_loss": cfg.lm_z_loss,
            "router_z_loss": cfg.router_z_loss,
            "trainable_parameters": sum(p.numel() for p in model.trainable_parameters()),
            **(
                {
                    "dp_target_epsilon": dp_spec.target_epsilon,
                    "dp_target_delta": dp_spec.target_delta,
                    "dp_max_grad_norm": dp_spec.max_grad_norm,
                }
                if dp_spec
                else {}
            ),
        },
    )
    out_dir = paths.expert_dir(domain) if setting is None else setting.out_dir
    title = f"train-expert {domain}" + (f" ({setting.label})" if setting else "")
    result = _run(
        title,
        model,
        coordinated_loss,
        train_data,
        val_data,
        spec,
        out_dir / "ckpt",
        params,
        extra,
        resume,
        logger,
        callback,
        rank,
    )
    model.cpu()
    model.assert_frozen_unchanged(public_model, r_pub)
    metrics = _metrics(result)
    meta = {"steps": str(result.steps), "tokens": str(result.tokens), "dp": str(use_dp)}
    if setting is not None:
        meta["ablation"] = setting.label
    if result.epsilon is not None:
        meta.update(dp_epsilon=f"{result.epsilon:.6g}", dp_delta=str(dp_spec.target_delta))
    sha = (
        save_expert(model.expert_state(), out_dir / EXPERT_FILE, domain=domain, public_sha256=public_sha, **meta)
        if rank == 0
        else ""
    )
    outcome = TrainOutcome(
        kind="expert",
        domain=domain,
        sha256=sha,
        metrics=metrics,
        checkpoint_dir=str(out_dir / "ckpt"),
        expert_file=str(out_dir / EXPERT_FILE),
        dp_epsilon=result.epsilon,
        resumed_from=result.resumed_from,
        params=params,
    )
    if rank == 0:
        card = {
            "domain": domain,
            "owner": profile.domains[domain].owner,
            "public_sha256": public_sha,
            "sha256": sha,
            "metrics": metrics,
            "dp_epsilon": result.epsilon,
            "dp_delta": dp_spec.target_delta if dp_spec else None,
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True), encoding="utf-8")
        _write_result(out_dir, outcome)
        (logger or ConsoleLogger(prefix=f"expert {domain}")).log_metrics(metrics, result.steps)
    return outcome


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
    _, train_data, val_data, steps = _expert_setup(profile, domain)
    model, public_sha = trained_public_model(profile)
    device, rank, _ = setup_runtime(profile)
    spec = make_spec(
        profile,
        cfg.optim,
        steps,
        cfg.batch_size,
        cfg.seq_len,
        cfg.eval_every,
        cfg.checkpoint_every,
        cfg.eval_batches,
        device,
        weight_decay=cfg.dense_weight_decay,
    )
    extra = public_sha + data_digest(train_data, val_data) + str(cfg.lm_z_loss)
    params = _flat_params("dense", domain, spec, train_data, {"public_sha256": public_sha, "lm_z_loss": cfg.lm_z_loss})
    result = _run(
        f"train-dense {domain}",
        model,
        dense_loss(cfg.lm_z_loss),
        train_data,
        val_data,
        spec,
        paths.dense_dir(domain) / "ckpt",
        params,
        extra,
        resume,
        logger,
        callback,
        rank,
    )
    return _finish_dense("dense", domain, model, result, paths.dense_dir(domain) / "model", paths, params, rank, logger)
