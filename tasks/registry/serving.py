"""Generation and serving over the assembled FlexOlmo MoE, with per-request opt-in/opt-out, attribution and consent.

Why: a data owner's consent can change per request and at any time. Opting out masks the expert's router logits to -inf
for that request (`model.optout.masked_experts`): exactly the output of the MoE assembled without it, with no reload.
An expert the registry says is withdrawn (`tasks.registry.consent`, however it was revoked) is masked the same way on
every answer, and asking for it by name is refused. Every answer says how much router probability each expert got
(`model.attribution.record_routing`), so users see who produced it.
The same class backs `flexo generate` and the MLflow pyfunc that `flexo serve` / `mlflow models serve` expose.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

import mlflow
from model.attribution import record_routing
from model.hashing import sha256_file
from model.optout import masked_experts
from tasks.core.artifacts import WEIGHTS_FILE
from tasks.core.config import Profile
from tasks.core.errors import ConfigError, FlexoError, IntegrityError, RevokedError
from tasks.registry.consent import CONSENT_TTL_S, ConsentWatch, withdrawn, withdrawn_in
from tasks.registry.names import (
    CONSENT_TTL_KEY,
    HOLDINGS_KEY,
    MAX_NEW_TOKENS_KEY,
    MOE_ARTIFACT,
    PREFIX_KEY,
    REGISTRY_URI_KEY,
    VersionRef,
)
from tasks.registry.request import PUBLIC, check_names, check_request, dropped_experts

# The pyfunc declares its schema with an explicit signature (prompt column + params); MLflow's advice to add type hints
# to `predict` instead (given when the class below is defined) is noise here.
warnings.filterwarnings("ignore", message=r".*[Tt]ype hint", category=UserWarning)


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
        return dropped_experts(self.experts, experts, exclude)

    def masked(
        self,
        experts: Sequence[str] | None,
        exclude: Sequence[str] | None,
        withdrawn_experts: Mapping[str, str] | None,
    ) -> list[int]:
        """`dropped` plus every withdrawn expert; RevokedError when a withdrawn expert is asked for by name."""
        gone = {name: why for name, why in (withdrawn_experts or {}).items() if name in self.experts}
        refused = sorted(set(experts or []) & set(gone))
        if refused:
            raise RevokedError("; ".join(f"{name}: {gone[name]}" for name in refused))
        return sorted({*self.dropped(experts, exclude), *(self.experts.index(name) for name in gone)})

    @torch.no_grad()
    def generate(
        self,
        prompt: str,
        max_new_tokens: int,
        experts: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        withdrawn_experts: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Greedy continuation of `prompt` with the chosen experts (withdrawn ones always masked): text, token ids,
        attribution and top-k selection per expert (both exactly 0 for a masked expert)."""
        check_request(prompt, max_new_tokens)
        drop = self.masked(experts, exclude, withdrawn_experts)
        encoded = self.tokenizer(prompt, return_tensors="pt")
        limit = int(self.model.config.max_position_embeddings)
        if encoded["input_ids"].shape[1] + max_new_tokens > limit:
            raise ConfigError(
                f"prompt ({encoded['input_ids'].shape[1]} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
                f"model's {limit} positions"
            )
        with masked_experts(self.model, drop), record_routing(self.model) as record:
            output = self.model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        new_tokens = output[0, encoded["input_ids"].shape[1] :]
        mass, selected = record.per_token()
        selected[:, drop] = 0.0  # top-k may pick a masked expert when fewer than k remain; its weight is 0
        names = self.experts
        return {
            "prompt": prompt,
            "text": self.tokenizer.decode(new_tokens, skip_special_tokens=True),
            "token_ids": new_tokens.tolist(),
            "experts": [name for i, name in enumerate(names) if i not in drop],
            "withdrawn": {name: why for name, why in (withdrawn_experts or {}).items() if name in names},
            "attribution": {name: round(float(s), 6) for name, s in zip(names, mass.mean(dim=0), strict=True)},
            "selected": {name: round(float(s), 6) for name, s in zip(names, selected.mean(dim=0), strict=True)},
        }


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def served_watch(config: Mapping[str, Any]) -> ConsentWatch:
    """The consent watch of a served MoE, from its pyfunc model_config: the registry it was registered in
    ($MLFLOW_TRACKING_URI, else the URI recorded then), the expert versions inside, the staleness bound."""
    from mlflow import MlflowClient

    missing = [key for key in (HOLDINGS_KEY, PREFIX_KEY) if key not in config]
    if missing:
        raise ConfigError(
            f"this flexo-moe version records no {missing} to check its experts' consent with; re-assemble it "
            "(`flexo run --stage assemble`)"
        )
    uri = os.environ.get("MLFLOW_TRACKING_URI") or str(config.get(REGISTRY_URI_KEY, ""))
    mlclient = MlflowClient(tracking_uri=uri, registry_uri=uri)
    held, prefix = {str(k): str(v) for k, v in dict(config[HOLDINGS_KEY]).items()}, str(config[PREFIX_KEY])
    watch = ConsentWatch(lambda: withdrawn(mlclient, prefix, held), float(config.get(CONSENT_TTL_KEY, CONSENT_TTL_S)))
    watch.current()  # a registry that cannot be read refuses the model at load, not at the first request
    return watch


class FlexoMoEPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: input rows with a `prompt` column; params `experts`/`exclude`/`max_new_tokens` per request.
    Withdrawn experts are masked on every request (the registry read again at most every `consent_ttl_s` seconds)."""

    def load_context(self, context: Any) -> None:
        self.moe = FlexoMoE(Path(context.artifacts[MOE_ARTIFACT]))
        # registry.generate_max_new_tokens of the profile that registered this version (pyfunc model_config)
        self.default_max_new_tokens = int(context.model_config[MAX_NEW_TOKENS_KEY])
        self.consent = served_watch(context.model_config)

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would infer a schema from them
        params = params or {}
        prompts = model_input["prompt"].tolist() if hasattr(model_input, "columns") else list(model_input)
        asked = params.get("max_new_tokens")
        max_new = self.default_max_new_tokens if asked in (None, 0) else asked  # 0: the signature's "not given"
        experts, exclude = _as_list(params.get("experts")), _as_list(params.get("exclude"))
        try:
            gone = self.consent.current()
            return [self.moe.generate(p, max_new, experts or None, exclude or None, gone) for p in prompts]
        except FlexoError as err:  # the client gets the reason and a 4xx, not MLflow's generic 500 text
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, PERMISSION_DENIED

            code = PERMISSION_DENIED if isinstance(err, RevokedError) else INVALID_PARAMETER_VALUE
            raise MlflowException(str(err), error_code=code) from err


def generate_from_registry(
    profile: Profile,
    prompt: str,
    experts: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    max_new_tokens: int | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """`flexo generate`: one answer from the `serving` (or given) flexo-moe version (refused if revoked, every file
    verified) with per-request opt-in/opt-out and attribution; the experts the registry withdrew are masked, and
    asking for one by name is refused. Excluding a domain the MoE does not hold is accepted (it is already out)."""
    from tasks.registry.download import moe_dir
    from tasks.registry.resolve import answering_moe, resolve_active_experts

    length = profile.registry.generate_max_new_tokens if max_new_tokens is None else max_new_tokens
    check_request(prompt, length)
    check_names(profile, experts, exclude)
    for name in experts or []:  # a domain asked for whose `active` version is revoked: that refusal comes first
        if name != PUBLIC:
            try:
                resolve_active_experts(profile, [name])
            except ConfigError:
                pass  # no active version: judged below against the versions inside the MoE
    ref, pyfunc_dir = answering_moe(profile, version)
    gone = withdrawn_in(profile, ref)
    moe = FlexoMoE(moe_dir(pyfunc_dir))
    present = [name for name in exclude or [] if name in moe.experts]
    answer = moe.generate(prompt, length, experts, present or None, gone)
    return {**answer, "model": f"{ref.name}:{ref.version}", "expert_versions": ref.tags.get("experts", "")}


def prepare_serving(profile: Profile, version: str | None = None) -> tuple[VersionRef, Path, dict[str, str]]:
    """What `flexo serve` checks before it hands the model to MLflow's scoring server, which imports its code: the
    version is not revoked, every stored file (served code, MLmodel, model card, weights) hashes to the registry's
    record, and the registry can be read for consent. Returns (ref, verified pyfunc dir, withdrawn experts)."""
    from tasks.registry.resolve import answering_moe

    ref, pyfunc_dir = answering_moe(profile, version)
    return ref, pyfunc_dir, withdrawn_in(profile, ref)
