"""Every training sized to its data: no run makes more than `max_epochs` passes over its train split, and M_pub's model
size follows its token budget.

The rule (README "Sizing a profile"):
- passes: a training's token budget is at most `max_epochs` x the tokens of its train split. Past about 4 epochs a
  repeated token is worth much less than a fresh one (Muennighoff et al. 2023, "Scaling Data-Constrained Language
  Models"), and the model memorises: `small` once ran M_pub 12.9 epochs over 3.1M tokens, its validation loss rose from
  3.20 to 4.70 and the memorised model was exported. The trainings: M_pub (`train_public.tokens` over data/public),
  each expert and each dense domain model (`train_expert.token_ratio` x `train_public.tokens` over data/<domain>).
- model size: M_pub's non-embedding parameters N are at most `train_public.tokens / train_public.min_tokens_per_param`.
  Compute-optimal is about 20 tokens per parameter (Hoffmann et al. 2022); a profile bound by compute (2 CPU cores, a
  15-minute GPU lease) trains fewer and states its ratio in params.yaml, so a bigger model without a bigger budget is
  refused. With an existing M_pub (`anchor`) nothing is pretrained and only the passes rule applies.

The passes are checked twice: at config load from the data cards (reports/<data>/cards/<domain>.json, written by the
data stage: tokens per split, without the EOS each packed document adds), and before training from the packed split
itself (exact), so a run never starts over budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tasks.core.config import ModelConfig, Profile
from tasks.core.errors import ConfigError

PUBLIC = "public"


def non_embedding_params(model: ModelConfig) -> int:
    """Attention (q, k, v, o: 4 d^2, full multi-head as OLMo-2 7B) and SwiGLU FFN (3 d f) per layer; norms and the
    embedding/unembedding matrices are left out, as in the scaling-law papers."""
    d, f = model.hidden_size, model.intermediate_size
    return model.num_layers * (4 * d * d + 3 * d * f)


@dataclass(frozen=True)
class Training:
    """One training of a profile: what it is, its budget key and value, and its `max_epochs` key and value."""

    label: str  # "M_pub", "expert and dense model <domain>"
    domain: str  # the data folder it reads
    budget_key: str
    tokens: int
    max_epochs_key: str
    max_epochs: float


def trainings(profile: Profile, pretrain: bool | None = None) -> list[Training]:
    """M_pub (when `pretrain`; by default unless an existing model is adopted) and, per owner, the expert and dense
    model (one shared budget)."""
    out: list[Training] = []
    tp, te = profile.train_public, profile.train_expert
    if not profile.anchor.pretrained if pretrain is None else pretrain:
        public = Training("M_pub", PUBLIC, "train_public.tokens", tp.tokens, "train_public.max_epochs", tp.max_epochs)
        out.append(public)
    budget_key = "train_expert.token_ratio x train_public.tokens"
    for domain in profile.closed_domains:
        label = f"expert and dense model {domain}"
        out.append(
            Training(label, domain, budget_key, profile.expert_tokens(), "train_expert.max_epochs", te.max_epochs)
        )
    return out


def check_passes(profile: Profile, training: Training, data_tokens: int, where: str) -> float:
    """The passes `training` makes over `data_tokens`; a ConfigError naming the profile, the training, its budget, the
    data and what to change when they exceed `max_epochs`."""
    passes = training.tokens / max(1, data_tokens)
    if passes > training.max_epochs:
        fit = int(training.max_epochs * data_tokens)
        raise ConfigError(
            f"profile '{profile.name}': {training.label} would train {training.tokens:,} tokens "
            f"({training.budget_key}) over {data_tokens:,} train tokens ({where}): {passes:.2f} passes, more than "
            f"{training.max_epochs_key} = {training.max_epochs:g}. Lower the budget to at most {fit:,} tokens, add "
            f"text to data/{training.domain} (and rebuild the data), or raise {training.max_epochs_key} in "
            "params.yaml (past ~4 passes the model mostly memorises)"
        )
    return passes


def cards_dir(profile: Profile) -> Path:
    """Where the data stage writes its cards (`tasks.data.cards`): reports/<data folder>/cards."""
    from tasks.core.artifacts import RunPaths  # artifacts imports this module's config: imported when called

    return RunPaths(profile).data_reports_dir / "cards"


def card_train_tokens(profile: Profile, domain: str) -> tuple[int, Path] | None:
    """The train split's token count from the domain's data card, and the card; None where there is no card yet."""
    path = cards_dir(profile) / f"{domain}.json"
    if not path.exists():
        return None
    try:
        tokens = json.loads(path.read_text(encoding="utf-8"))["tokens"]["train"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a data card with tokens.train; rebuild the data cards") from exc
    return int(tokens), path


def check_scaling(profile: Profile) -> float | None:
    """M_pub's tokens per non-embedding parameter; a ConfigError when below `train_public.min_tokens_per_param`. None
    with an existing M_pub (nothing is pretrained)."""
    if profile.anchor.pretrained:
        return None
    tp = profile.train_public
    params = non_embedding_params(profile.model)
    ratio = tp.tokens / params
    if ratio < tp.min_tokens_per_param:
        raise ConfigError(
            f"profile '{profile.name}': M_pub has {params:,} non-embedding parameters and train_public.tokens = "
            f"{tp.tokens:,}: {ratio:.3g} tokens per parameter, below train_public.min_tokens_per_param = "
            f"{tp.min_tokens_per_param:g}. Shrink model.* or raise train_public.tokens (compute-optimal is ~20)"
        )
    return ratio


def check_sizing(profile: Profile, with_data: bool = True) -> dict[str, float]:
    """Config-load check: the scaling rule and, `with_data`, the passes of every training whose data card exists.
    Returns the passes per training label (those checked)."""
    check_scaling(profile)
    passes: dict[str, float] = {}
    for training in trainings(profile) if with_data else []:
        found = card_train_tokens(profile, training.domain)
        if found is not None:
            tokens, card = found
            passes[training.label] = check_passes(profile, training, tokens, f"data card {card}")
    return passes
