"""Registering an assembled MoE: a `flexo-moe` version that names exactly the expert versions inside it.

The version is an MLflow "model from code" pyfunc (`serving_entry.py` plus the assembled safetensors), so serving it
never unpickles a python object; its generated model card lists every expert, owner and version. Every stored file,
the served code first, is hashed as stored and recorded in the version's `files_sha256` tag, so a download can prove
the code it is about to import is the code that was registered. The pyfunc's model_config names the expert versions
inside and the registry they came from, so the served model itself checks their consent (`tasks.registry.consent`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from model.hashing import sha256_file
from tasks.core.artifacts import MODEL_CARD_FILE, WEIGHTS_FILE
from tasks.core.config import Profile
from tasks.core.errors import IntegrityError
from tasks.core.tracking import tracking_uri
from tasks.registry import audit, consent
from tasks.registry.digests import encode, logged_model_digests
from tasks.registry.names import (
    CONSENT_TTL_KEY,
    EXPERT_TAG_PREFIX,
    EXPERTS_TAG,
    HOLDINGS_KEY,
    MAX_NEW_TOKENS_KEY,
    MOE_ARTIFACT,
    PREFIX_KEY,
    PYFUNC_ENTRY,
    REGISTRY_URI_KEY,
    SERVING_ALIAS,
    TAG_FILES,
    TAG_OWNER,
    VersionRef,
    check_usable,
)
from tasks.registry.register import RegistrationRun, create_version, version_tags
from tasks.registry.store import client, ensure_model, ref_of


def model_card(experts: Sequence[VersionRef], sha: str, top_k: int) -> str:
    """The generated card of one MoE version: every expert, its owner and exact version."""
    lines = [
        "# flexo-moe",
        "",
        f"FlexOlmo mixture: the public expert plus {len(experts)} data owners' experts, top-{top_k} routing.",
        f"Weights: `{WEIGHTS_FILE}` sha256 `{sha}`.",
        "",
        "| expert | registered model | version | owner | sha256 |",
        "|---|---|---|---|---|",
        "| public | (M_pub, inside the shared weights) | - | - | - |",
    ]
    lines += [f"| {e.domain} | {e.name} | {e.version} | {e.owner} | `{e.sha256[:16]}…` |" for e in experts]
    return "\n".join(lines) + "\n"


def register_moe(
    profile: Profile,
    assembled: Any,
    experts: Sequence[VersionRef],
    metrics: Mapping[str, float] | None = None,
    serving: bool = True,
) -> VersionRef:
    """A new `flexo-moe` version (pyfunc model from code around the assembled safetensors), tagged with exactly the
    expert versions inside; alias `serving` moves to it when `serving`."""
    import mlflow

    _check_assembly(assembled, experts)
    model_dir = Path(assembled.model_dir)
    (model_dir / MODEL_CARD_FILE).write_text(model_card(experts, assembled.sha256, assembled.top_k))  # the description
    mlclient = client(profile)
    name = profile.registry.moe_model
    ensure_model(mlclient, name, "The assembled FlexOlmo MoE; each version lists the exact expert versions inside.")
    tags = version_tags(profile, "moe", assembled.sha256, "", metrics)
    tags.update(
        {
            TAG_OWNER: "flexo",
            EXPERTS_TAG: ",".join(f"{e.domain}:{e.version}" for e in experts),
            "top_k": str(assembled.top_k),
        }
    )
    tags.update({f"{EXPERT_TAG_PREFIX}{e.domain}": e.version for e in experts})
    card = model_card(experts, assembled.sha256, assembled.top_k)
    with RegistrationRun(profile, "moe"):
        info = _log_pyfunc(profile, model_dir, experts)
        tags[TAG_FILES] = encode(_stored_digests(info.model_id, assembled.sha256))
        if metrics:
            mlflow.log_metrics(dict(metrics))
        ref = create_version(mlclient, name, info.model_uri, info.run_id, tags, description=card)
    audit.record(mlclient, name, ref.version, "registered", sha256=assembled.sha256, experts=tags[EXPERTS_TAG])
    if serving:
        mlclient.set_registered_model_alias(name, SERVING_ALIAS, ref.version)
        audit.record(mlclient, name, ref.version, "alias_set", alias=SERVING_ALIAS)
    return ref_of(mlclient.get_model_version(name, ref.version))


def _check_assembly(assembled: Any, experts: Sequence[VersionRef]) -> None:
    """The assembled model holds exactly these usable expert versions, and its weights are the ones assembled."""
    inside = list(assembled.experts[1:])
    if inside != [e.domain for e in experts]:
        raise IntegrityError(
            f"assembled experts {inside} do not match the registry versions {[e.domain for e in experts]}"
        )
    for expert in experts:
        check_usable(expert)
    weights = Path(assembled.model_dir) / WEIGHTS_FILE
    if sha256_file(weights) != assembled.sha256:
        raise IntegrityError(f"{weights}: changed after assembly; re-assemble")


def _stored_digests(model_id: str, sha: str) -> dict[str, str]:
    """The digests of the logged model's files as stored; IntegrityError unless its weights are the assembled ones."""
    digests = logged_model_digests(model_id)
    weights = [rel for rel in digests if rel.endswith(f"/{WEIGHTS_FILE}")]
    if [digests[rel] for rel in weights] != [sha]:
        raise IntegrityError(f"the stored weights of logged model {model_id} ({weights}) are not the assembled ones")
    return digests


def _without_credentials(uri: str) -> str:
    """`uri` without a user name or password (the served model records where its registry is, never a secret)."""
    parts = urlsplit(uri)
    if not (parts.username or parts.password):
        return uri
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return urlunsplit(parts._replace(netloc=host))


def _model_config(profile: Profile, experts: Sequence[VersionRef]) -> dict[str, Any]:
    """What the served model needs besides its weights: its default answer length and what to check consent with."""
    return {
        MAX_NEW_TOKENS_KEY: profile.registry.generate_max_new_tokens,
        HOLDINGS_KEY: {e.domain: e.version for e in experts},
        PREFIX_KEY: profile.registry.expert_model_prefix,
        REGISTRY_URI_KEY: _without_credentials(tracking_uri(profile)),
        CONSENT_TTL_KEY: consent.CONSENT_TTL_S,
    }


def _log_pyfunc(profile: Profile, model_dir: Path, experts: Sequence[VersionRef]) -> Any:
    """Log the MoE as a pyfunc from code to the active run; returns MLflow's ModelInfo."""
    import torch
    import transformers

    import mlflow

    with warnings.catch_warnings():
        # an input example would make MLflow load and run the model at registration; the signature says it all
        warnings.filterwarnings("ignore", message=r".*(input example|[Tt]ype hint)", category=UserWarning)
        return mlflow.pyfunc.log_model(
            name="flexo-moe",
            python_model=str(PYFUNC_ENTRY),
            artifacts={MOE_ARTIFACT: str(model_dir)},
            signature=_signature(),
            model_config=_model_config(profile, experts),
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"torch=={torch.__version__.split('+')[0]}",
                f"transformers=={transformers.__version__}",
                "safetensors",
            ],
        )


def _signature() -> Any:
    """Input: a `prompt` column; params: `experts` (opt-in), `exclude` (opt-out), `max_new_tokens`."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, "prompt")]),
        params=ParamSchema(
            [
                ParamSpec("experts", DataType.string, [], (-1,)),
                ParamSpec("exclude", DataType.string, [], (-1,)),
                ParamSpec("max_new_tokens", DataType.long, 0),
            ]
        ),
    )
