"""Generation and serving over the assembled FlexOlmo MoE, with per-request opt-in/opt-out and attribution.

Why: a data owner's consent can change per request. Opting out masks the expert's router logits to -inf for that
request (`model.optout.masked_experts`): exactly the output of the MoE assembled without it, with no reload. Every
answer says how much router probability each expert got (`model.attribution.record_routing`), so users see who
produced it.
The same class backs `flexo generate` and the MLflow pyfunc that `flexo serve` / `mlflow models serve` expose.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import mlflow
from model.attribution import record_routing
from model.hashing import sha256_file
from model.optout import masked_experts
from tasks.core.artifacts import WEIGHTS_FILE
from tasks.core.errors import ConfigError, IntegrityError
from tasks.registry.names import ACTIVE_ALIAS, MAX_NEW_TOKENS_KEY, MOE_ARTIFACT, expert_model_name

# The pyfunc declares its schema with an explicit signature (prompt column + params); MLflow's advice to add type hints
# to `predict` instead (given when the class below is defined) is noise here.
warnings.filterwarnings("ignore", message=r".*[Tt]ype hint", category=UserWarning)

PUBLIC = "public"


class FlexoMoE:
    """A loaded, sha256-verified assembled MoE with its expert names (from the assembly manifest)."""

    def __init__(self, model_dir: Path):
        from transformers import AutoTokenizer

        from model.public import load_moe
        from tasks.training.assemble import read_manifest

        self.model_dir = Path(model_dir)
        manifest = read_manifest(self.model_dir)
        weights = self.model_dir / WEIGHTS_FILE
        if sha256_file(weights) != manifest["sha256"]:
            raise IntegrityError(f"{weights}: sha256 differs from the assembly manifest; the weights were changed")
        if not (self.model_dir / "tokenizer_config.json").exists():
            raise ConfigError(
                f"{self.model_dir}: no tokenizer beside the weights; assemble after training the tokenizer"
            )
        self.experts: list[str] = list(manifest["experts"])
        self.model = load_moe(str(self.model_dir))
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)

    def dropped(self, experts: Sequence[str] | None = None, exclude: Sequence[str] | None = None) -> list[int]:
        """Indices to mask: everything not opted in (`experts`; public always stays) plus everything `exclude`d."""
        if experts and exclude:
            raise ConfigError("give either experts (opt-in) or exclude (opt-out), not both")
        asked = [*(experts or []), *(exclude or [])]
        unknown = sorted(set(asked) - set(self.experts))
        if unknown:
            raise ConfigError(f"expert(s) {unknown} are not in this model; it holds {self.experts}")
        if exclude and PUBLIC in exclude:
            raise ConfigError("the public expert cannot be excluded: it holds the shared model everyone builds on")
        if experts:
            keep = {PUBLIC, *experts}
            return [i for i, name in enumerate(self.experts) if name not in keep]
        return [self.experts.index(name) for name in (exclude or [])]

    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        max_new_tokens: int,
        experts: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Greedy continuation of `prompt` with the chosen experts; text, token ids and attribution per expert."""
        drop = self.dropped(experts, exclude)
        encoded = self.tokenizer(prompt, return_tensors="pt")
        with masked_experts(self.model, drop), record_routing(self.model) as record:
            output = self.model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = output[0, encoded["input_ids"].shape[1] :]
        mass, selected = record.per_token()
        return {
            "prompt": prompt,
            "text": self.tokenizer.decode(new_tokens, skip_special_tokens=True),
            "token_ids": new_tokens.tolist(),
            "experts": [name for i, name in enumerate(self.experts) if i not in drop],
            "attribution": {
                name: round(float(share), 6) for name, share in zip(self.experts, mass.mean(dim=0), strict=True)
            },
            "selected": {
                name: round(float(share), 6) for name, share in zip(self.experts, selected.mean(dim=0), strict=True)
            },
        }


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


class FlexoMoEPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: input rows with a `prompt` column; params `experts`/`exclude`/`max_new_tokens` per request."""

    def load_context(self, context: Any) -> None:
        self.moe = FlexoMoE(Path(context.artifacts[MOE_ARTIFACT]))
        # registry.generate_max_new_tokens of the profile that registered this version (pyfunc model_config)
        self.default_max_new_tokens = int(context.model_config[MAX_NEW_TOKENS_KEY])

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would infer a schema from them
        params = params or {}
        prompts = model_input["prompt"].tolist() if hasattr(model_input, "columns") else [str(p) for p in model_input]
        max_new = int(params.get("max_new_tokens") or self.default_max_new_tokens)
        experts, exclude = _as_list(params.get("experts")), _as_list(params.get("exclude"))
        return [self.moe.generate(p, max_new, experts or None, exclude or None) for p in prompts]


def check_requested(profile: Any, names: Sequence[str]) -> None:
    """Every named expert must be a configured domain with an active, non-revoked version (RevokedError names the
    revocation), so asking for a revoked expert is a clear refusal rather than a silent omission."""
    from tasks.registry.resolve import resolve_active_experts
    from tasks.registry.store import by_alias

    for name in names:
        if name == PUBLIC:
            continue
        if name not in profile.closed_domains:
            raise ConfigError(f"'{name}' is not a configured domain; choose from {profile.closed_domains}")
        if by_alias(profile, expert_model_name(profile, name), ACTIVE_ALIAS) is None:
            resolve_active_experts(profile, [name])  # raises RevokedError or ConfigError naming why


def generate_from_registry(
    profile: Any,
    prompt: str,
    experts: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    max_new_tokens: int | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """`flexo generate`: the `serving` (or given) flexo-moe version, refused if revoked, sha256-verified, then one
    answer with per-request opt-in/opt-out and attribution; the answer names the MoE version it came from."""
    from tasks.registry.download import moe_dir
    from tasks.registry.resolve import resolve_serving_moe

    check_requested(profile, [*(experts or []), *(exclude or [])])
    ref, pyfunc_dir = resolve_serving_moe(profile, version)
    moe = FlexoMoE(moe_dir(pyfunc_dir))
    answer = moe.generate(prompt, max_new_tokens or profile.registry.generate_max_new_tokens, experts, exclude)
    return {**answer, "model": f"{ref.name}:{ref.version}", "expert_versions": ref.tags.get("experts", "")}
