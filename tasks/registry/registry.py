"""The MLflow model registry for flexo: every expert a separately versioned, revocable model.

Registered models (DESIGN.md "Names"): `flexo-public`, `flexo-expert-<domain>`, `flexo-moe`. Every version carries the
tags `domain`, `owner`, `data_md5`, `git_commit`, `sha256`, `status`; experts get alias `active` only when their checks
pass, the MoE gets `serving`. Stages are deprecated in MLflow 3, so aliases and tags carry the lifecycle.

Nothing leaves the registry unchecked: `fetch` refuses a revoked version (RevokedError naming who, when and why) and
re-hashes the weights against the registered sha256 before returning a path (IntegrityError on any difference).
Weights are safetensors; nothing is pickled (the MoE is an MLflow "model from code" pyfunc around safetensors files).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.hashing import sha256_file
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.errors import ConfigError, IntegrityError, RevokedError
from tasks.core.tracking import TAG_GIT_COMMIT, lineage_tags, setup, tracking_uri
from tasks.registry import audit

WEIGHTS_FILE = "model.safetensors"  # = model.export.WEIGHTS_FILE; not imported, since that pulls in transformers
ACTIVE_ALIAS = "active"
SERVING_ALIAS = "serving"
STATUS_ACTIVE = "active"
STATUS_REVOKED = "revoked"
STATUS_REVOKED_DEPENDENCY = "revoked_dependency"
EXPERT_FILE = "expert.safetensors"
CARD_FILE = "expert_card.json"
ROUTER_FILE = "router.safetensors"
MODEL_CARD = "model_card.md"
MOE_ARTIFACT = "moe"  # the pyfunc's artifact key: the assembled model directory
MAX_NEW_TOKENS_KEY = "max_new_tokens"  # the pyfunc's model_config key: default answer length
PYFUNC_ENTRY = Path(__file__).with_name("serving_entry.py")  # MLflow "model from code": no pickled python object
EXPERTS_TAG = "experts"  # on MoE versions: "news:3,math:1" (exact expert versions inside)
EXPERT_TAG_PREFIX = "expert."  # on MoE versions: expert.<domain> = version


@dataclass(frozen=True)
class VersionRef:
    """One registered version, as the rest of flexo sees it."""

    name: str
    version: str
    domain: str
    sha256: str
    owner: str
    status: str
    aliases: tuple[str, ...]
    source: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} version {self.version}"


_CLIENTS: dict[tuple[str, str], Any] = {}


def client(profile: Profile):
    """An MlflowClient on the profile's (or $MLFLOW_TRACKING_URI's) store, with the experiment created (one per store
    and experiment per process: opening a store checks its schema, which is slow)."""
    from mlflow import MlflowClient

    uri = tracking_uri(profile)
    key = (uri, profile.registry.experiment)
    if key not in _CLIENTS:
        setup(profile)
        _CLIENTS[key] = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return _CLIENTS[key]


def expert_model_name(profile: Profile, domain: str) -> str:
    return f"{profile.registry.expert_model_prefix}{domain}"


def _ref(mv: Any) -> VersionRef:
    tags = dict(mv.tags or {})
    return VersionRef(
        name=mv.name,
        version=str(mv.version),
        domain=tags.get("domain", ""),
        sha256=tags.get("sha256", ""),
        owner=tags.get("owner", ""),
        status=tags.get("status", ""),
        aliases=tuple(mv.aliases or ()),
        source=mv.source,
        run_id=mv.run_id,
        tags=tags,
    )


def _ensure_model(mlclient: Any, name: str, description: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        mlclient.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        mlclient.create_registered_model(name, description=description)


class _RegistrationRun:
    """The run a registration logs its artifacts to: the active run, or a short run of its own."""

    def __init__(self, profile: Profile, name: str):
        self.profile, self.name, self.own = profile, name, False

    def __enter__(self) -> str:
        import mlflow

        active = mlflow.active_run()
        if active is not None:
            return active.info.run_id
        setup(self.profile)
        run = mlflow.start_run(run_name=self.name, tags={**lineage_tags(self.profile), "stage": "register"})
        self.own = True
        return run.info.run_id

    def __exit__(self, *exc: Any) -> None:
        import mlflow

        if self.own:
            mlflow.end_run(status="FAILED" if exc[0] else "FINISHED")


def _version_tags(
    profile: Profile, domain: str, sha: str, data_md5: str, metrics: Mapping[str, float] | None
) -> dict[str, str]:
    tags = {
        "domain": domain,
        "owner": profile.domains[domain].owner if domain in profile.domains else "flexo",
        "data_md5": data_md5,
        TAG_GIT_COMMIT: lineage_tags(profile)[TAG_GIT_COMMIT],
        "sha256": sha,
        "status": STATUS_ACTIVE,
    }
    tags.update({f"metric.{key}": f"{float(value):.6g}" for key, value in (metrics or {}).items()})
    return tags


def _create_version(mlclient: Any, name: str, source: str, run_id: str, tags: Mapping[str, str]) -> VersionRef:
    mv = mlclient.create_model_version(name, source=source, run_id=run_id, tags=dict(tags))
    return _ref(mlclient.get_model_version(name, mv.version))


def register_public(
    profile: Profile, model_dir: Path, data_md5: str, metrics: Mapping[str, float] | None = None
) -> VersionRef:
    """A new `flexo-public` version from M_pub's save_pretrained directory; alias `active` moves to it."""
    import mlflow

    weights = Path(model_dir) / WEIGHTS_FILE
    if not weights.exists():
        raise IntegrityError(f"{weights}: M_pub has no single safetensors file; export it with model.export first")
    mlclient = client(profile)
    name = profile.registry.public_model
    _ensure_model(mlclient, name, "M_pub: the public OLMo-2-style model every expert is coordinated with.")
    with _RegistrationRun(profile, "register/public") as run_id:
        mlclient.log_artifacts(run_id, str(model_dir), "public")
        if metrics:
            mlflow.log_metrics(dict(metrics))
        source = f"{mlclient.get_run(run_id).info.artifact_uri}/public"
        ref = _create_version(
            mlclient, name, source, run_id, _version_tags(profile, "public", sha256_file(weights), data_md5, metrics)
        )
    mlclient.set_registered_model_alias(name, ACTIVE_ALIAS, ref.version)
    audit.record(mlclient, name, ref.version, "registered", sha256=ref.sha256)
    audit.record(mlclient, name, ref.version, "alias_set", alias=ACTIVE_ALIAS)
    return _ref(mlclient.get_model_version(name, ref.version))


def register_expert(
    profile: Profile,
    domain: str,
    expert_file: Path,
    data_md5: str,
    metrics: Mapping[str, float] | None = None,
    checks: Mapping[str, bool] | None = None,
    dp_epsilon: float | None = None,
    router_file: Path | None = None,
    card: Mapping[str, Any] | None = None,
) -> VersionRef:
    """A new version of `flexo-expert-<domain>`: expert.safetensors + expert_card.json (+ router row), tagged for
    lineage.

    Alias `active` moves to it only if every check passed (e.g. the extraction-attack gate); otherwise the version is
    registered with `alias_withheld` naming the failed checks and the previous active version stays.
    """
    from safetensors import safe_open

    import mlflow

    if domain not in profile.closed_domains:
        raise ConfigError(f"domain '{domain}' is not a data owner's domain; choose one of {profile.closed_domains}")
    expert_file = Path(expert_file)
    with safe_open(str(expert_file), framework="pt") as handle:
        file_domain = (handle.metadata() or {}).get("domain")
    if file_domain != domain:
        raise IntegrityError(f"{expert_file}: holds the expert of domain '{file_domain}', not '{domain}'")
    sha = sha256_file(expert_file)
    mlclient = client(profile)
    name = expert_model_name(profile, domain)
    _ensure_model(mlclient, name, f"The {domain} expert of owner {profile.domains[domain].owner}: FFN + router row.")
    tags = _version_tags(profile, domain, sha, data_md5, metrics)
    failed = sorted(check for check, passed in (checks or {}).items() if not passed)
    tags.update({f"check.{check}": "passed" if passed else "failed" for check, passed in (checks or {}).items()})
    if dp_epsilon is not None:
        tags["dp_epsilon"] = f"{dp_epsilon:.6g}"
    expert_card = {
        "domain": domain,
        "owner": tags["owner"],
        "sha256": sha,
        "data_md5": data_md5,
        "git_commit": tags[TAG_GIT_COMMIT],
        "metrics": dict(metrics or {}),
        "checks": dict(checks or {}),
        "dp_epsilon": dp_epsilon,
        **dict(card or {}),
    }
    with tempfile.TemporaryDirectory() as staging, _RegistrationRun(profile, f"register/{domain}") as run_id:
        shutil.copyfile(expert_file, Path(staging) / EXPERT_FILE)
        if router_file is not None:
            shutil.copyfile(router_file, Path(staging) / ROUTER_FILE)
        (Path(staging) / CARD_FILE).write_text(json.dumps(expert_card, indent=2, sort_keys=True))
        mlclient.log_artifacts(run_id, staging, f"expert-{domain}")
        if metrics:
            mlflow.log_metrics({f"{domain}.{k}": float(v) for k, v in metrics.items()})
        source = f"{mlclient.get_run(run_id).info.artifact_uri}/expert-{domain}"
        ref = _create_version(mlclient, name, source, run_id, tags)
    audit.record(mlclient, name, ref.version, "registered", sha256=sha, data_md5=data_md5)
    if failed:
        mlclient.set_model_version_tag(name, ref.version, "alias_withheld", ",".join(failed))
        audit.record(mlclient, name, ref.version, "alias_withheld", alias=ACTIVE_ALIAS, failed_checks=failed)
    else:
        mlclient.set_registered_model_alias(name, ACTIVE_ALIAS, ref.version)
        audit.record(mlclient, name, ref.version, "alias_set", alias=ACTIVE_ALIAS)
    return _ref(mlclient.get_model_version(name, ref.version))


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


def _moe_signature():
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


def register_moe(
    profile: Profile,
    assembled: Any,
    experts: Sequence[VersionRef],
    metrics: Mapping[str, float] | None = None,
    serving: bool = True,
) -> VersionRef:
    """A new `flexo-moe` version (pyfunc model from code around the assembled safetensors), tagged with exactly the
    expert versions inside; alias `serving` moves to it when `serving`."""
    import torch
    import transformers

    import mlflow

    inside = list(assembled.experts[1:])
    if inside != [e.domain for e in experts]:
        raise IntegrityError(
            f"assembled experts {inside} do not match the registry versions {[e.domain for e in experts]}"
        )
    for expert in experts:
        check_usable(expert)
    model_dir = Path(assembled.model_dir)
    if sha256_file(model_dir / WEIGHTS_FILE) != assembled.sha256:
        raise IntegrityError(f"{model_dir / WEIGHTS_FILE}: changed after assembly; re-assemble")
    (model_dir / MODEL_CARD).write_text(model_card(experts, assembled.sha256, assembled.top_k))
    mlclient = client(profile)
    name = profile.registry.moe_model
    _ensure_model(mlclient, name, "The assembled FlexOlmo MoE; each version lists the exact expert versions inside.")
    tags = _version_tags(profile, "moe", assembled.sha256, "", metrics)
    tags.update(
        {
            "owner": "flexo",
            EXPERTS_TAG: ",".join(f"{e.domain}:{e.version}" for e in experts),
            "top_k": str(assembled.top_k),
        }
    )
    tags.update({f"{EXPERT_TAG_PREFIX}{e.domain}": e.version for e in experts})
    with _RegistrationRun(profile, "register/moe"), warnings.catch_warnings():
        # an input example would make MLflow load and run the model at registration; the signature says it all
        warnings.filterwarnings("ignore", message=r".*(input example|[Tt]ype hint)", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name="flexo-moe",
            python_model=str(PYFUNC_ENTRY),
            artifacts={MOE_ARTIFACT: str(model_dir)},
            signature=_moe_signature(),
            model_config={MAX_NEW_TOKENS_KEY: profile.registry.generate_max_new_tokens},
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"torch=={torch.__version__.split('+')[0]}",
                f"transformers=={transformers.__version__}",
                "safetensors",
            ],
        )
        if metrics:
            mlflow.log_metrics(dict(metrics))
        ref = _create_version(mlclient, name, info.model_uri, info.run_id, tags)
    audit.record(mlclient, name, ref.version, "registered", sha256=assembled.sha256, experts=tags[EXPERTS_TAG])
    if serving:
        mlclient.set_registered_model_alias(name, SERVING_ALIAS, ref.version)
        audit.record(mlclient, name, ref.version, "alias_set", alias=SERVING_ALIAS)
    return _ref(mlclient.get_model_version(name, ref.version))


def get_version(profile: Profile, name: str, version: str | int) -> VersionRef:
    """One version (with its aliases); ConfigError naming it if it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return _ref(client(profile).get_model_version(name, str(version)))
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ConfigError(f"{name} version {version} does not exist; `flexo experts` lists the versions") from err
        raise


def by_alias(profile: Profile, name: str, alias: str) -> VersionRef | None:
    """The version an alias points at, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return _ref(client(profile).get_model_version_by_alias(name, alias))
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def versions(profile: Profile, name: str) -> list[VersionRef]:
    """Every version of a registered model, newest first, with aliases populated."""
    mlclient = client(profile)
    found = mlclient.search_model_versions(f"name='{name}'")
    refs = [_ref(mlclient.get_model_version(name, mv.version)) for mv in found]
    return sorted(refs, key=lambda r: int(r.version), reverse=True)


def check_usable(ref: VersionRef) -> None:
    """RevokedError naming the revocation if this version (or an expert inside it) was revoked."""
    if ref.status == STATUS_REVOKED:
        raise RevokedError(
            f"{ref.label} was revoked by {ref.tags.get('revoked_by', '?')} at {ref.tags.get('revoked_at', '?')}: "
            f'"{ref.tags.get("revoked_reason", "")}". It may not be loaded; `flexo experts` shows the active versions.'
        )
    if ref.status == STATUS_REVOKED_DEPENDENCY:
        raise RevokedError(
            f"{ref.label} contains a revoked expert ({ref.tags.get('revoked_dependency', '?')}); use the current "
            f"`{SERVING_ALIAS}` version, re-assembled without it"
        )


def fetch(profile: Profile, ref: VersionRef) -> Path:
    """Download a usable version into the registry cache and verify its weights' sha256; returns the local directory."""
    import mlflow

    check_usable(ref)
    if not ref.sha256:
        raise IntegrityError(f"{ref.label} has no sha256 tag; it cannot be verified and will not be loaded")
    target = RunPaths(profile).registry_cache / ref.name / ref.version
    if target.exists():
        shutil.rmtree(target)  # always a fresh copy: a cached file could have been changed
    target.mkdir(parents=True)
    setup(profile)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.source, dst_path=str(target)))
    verify(ref, weights_path(ref, local))
    return local


def weights_path(ref: VersionRef, local_dir: Path) -> Path:
    """Where a downloaded version keeps its weights (expert file, M_pub's or the MoE's model.safetensors)."""
    if ref.name.startswith("flexo-expert-") or (local_dir / EXPERT_FILE).exists():
        return local_dir / EXPERT_FILE
    if (local_dir / WEIGHTS_FILE).exists():
        return local_dir / WEIGHTS_FILE
    return moe_dir(local_dir) / WEIGHTS_FILE


def moe_dir(pyfunc_dir: Path) -> Path:
    """The assembled model directory inside a downloaded `flexo-moe` pyfunc."""
    candidates = [p.parent for p in (Path(pyfunc_dir) / "artifacts").rglob(WEIGHTS_FILE)]
    if len(candidates) != 1:
        raise IntegrityError(f"{pyfunc_dir}: expected one assembled model inside the pyfunc, found {len(candidates)}")
    return candidates[0]


def verify(ref: VersionRef, path: Path) -> None:
    """IntegrityError unless `path` hashes to the sha256 the registry recorded for `ref`."""
    if not path.exists():
        raise IntegrityError(f"{ref.label}: weights file {path} is missing from the downloaded artifacts")
    actual = sha256_file(path)
    if actual != ref.sha256:
        raise IntegrityError(
            f"{ref.label}: {path.name} has sha256 {actual[:12]}…, the registry recorded {ref.sha256[:12]}…; the stored "
            "file was changed after registration. Refusing to load it: re-register from a trusted copy."
        )


def resolve_active_experts(profile: Profile, domains: Sequence[str] | None = None) -> list[VersionRef]:
    """The `active`, non-revoked version of each domain's expert (all owners' domains that have one, by default).

    A domain asked for by name must have an active version (RevokedError if its latest was revoked, ConfigError if
    none).
    """
    chosen = list(domains) if domains is not None else profile.closed_domains
    refs = []
    for domain in chosen:
        name = expert_model_name(profile, domain)
        ref = by_alias(profile, name, ACTIVE_ALIAS)
        if ref is None:
            if domains is None:
                continue
            revoked = [v for v in versions_if_any(profile, name) if v.status == STATUS_REVOKED]
            if revoked:
                check_usable(revoked[0])
            raise ConfigError(
                f"{name} has no `{ACTIVE_ALIAS}` version; register (and pass the checks of) a version first"
            )
        check_usable(ref)
        refs.append(ref)
    return refs


def versions_if_any(profile: Profile, name: str) -> list[VersionRef]:
    from mlflow.exceptions import MlflowException

    try:
        return versions(profile, name)
    except MlflowException:
        return []


def expert_files(profile: Profile, refs: Sequence[VersionRef]) -> list[Path]:
    """Downloaded, sha256-verified expert files for assembly (same order as `refs`)."""
    return [fetch(profile, ref) / EXPERT_FILE for ref in refs]


def resolve_serving_moe(profile: Profile, version: str | None = None) -> tuple[VersionRef, Path]:
    """The `serving` (or given) `flexo-moe` version, refused if revoked, downloaded and verified: (ref, pyfunc dir)."""
    name = profile.registry.moe_model
    ref = get_version(profile, name, version) if version else by_alias(profile, name, SERVING_ALIAS)
    if ref is None:
        raise ConfigError(f"{name} has no `{SERVING_ALIAS}` version; run the pipeline (or `flexo assemble`) first")
    return ref, fetch(profile, ref)


def moe_versions_containing(profile: Profile, domain: str, version: str) -> list[VersionRef]:
    """Every `flexo-moe` version whose tags say it holds `domain` at `version`."""
    return [
        ref
        for ref in versions_if_any(profile, profile.registry.moe_model)
        if ref.tags.get(f"{EXPERT_TAG_PREFIX}{domain}") == str(version)
    ]


def record_check(
    profile: Profile, domain: str, version: str | int, check: str, passed: bool, detail: str = ""
) -> VersionRef:
    """Record a gate's verdict on an expert version registered before the gate ran (e.g. the extraction attack).

    Tags `check.<check>` passed|failed. A failed check takes `active` away from this version and gives it back to the
    newest earlier version that is active and failed no check (or to none), so only checked experts are assembled.
    """
    mlclient = client(profile)
    name = expert_model_name(profile, domain)
    ref = get_version(profile, name, version)
    mlclient.set_model_version_tag(name, ref.version, f"check.{check}", "passed" if passed else "failed")
    audit.record(mlclient, name, ref.version, "check", check=check, passed=passed, detail=detail)
    if passed or ACTIVE_ALIAS not in ref.aliases:
        return get_version(profile, name, ref.version)
    mlclient.delete_registered_model_alias(name, ACTIVE_ALIAS)
    audit.record(mlclient, name, ref.version, "alias_removed", alias=ACTIVE_ALIAS, failed_check=check)
    fallback = next(
        (
            earlier
            for earlier in versions(profile, name)
            if int(earlier.version) < int(ref.version)
            and earlier.status == STATUS_ACTIVE
            and not any(k.startswith("check.") and v == "failed" for k, v in earlier.tags.items())
        ),
        None,
    )
    if fallback is not None:
        mlclient.set_registered_model_alias(name, ACTIVE_ALIAS, fallback.version)
        audit.record(mlclient, name, fallback.version, "alias_set", alias=ACTIVE_ALIAS, replaces=ref.version)
    return get_version(profile, name, ref.version)
