"""Registering M_pub and the owners' experts: every expert a separately versioned, revocable model.

Every version carries the tags `domain`, `owner`, `data_md5`, `git_commit`, `sha256`, `status`; an expert gets the alias
`active` only when its checks pass, and a check that fails later (`record_check`) takes it back. Weights are
safetensors; nothing is pickled.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.hashing import sha256_file
from tasks.core.artifacts import ANCHOR_FILE, EXPERT_CARD_FILE, EXPERT_FILE, ROUTER_ROW_FILE, WEIGHTS_FILE
from tasks.core.config import Profile
from tasks.core.errors import ConfigError, IntegrityError
from tasks.core.tracking import TAG_DOMAIN as TAG_RUN_DOMAIN
from tasks.core.tracking import (
    TAG_GIT_COMMIT,
    TAG_OUTPUT_SHA256,
    TAG_STAGE,
    lineage_tags,
    parent_run_id,
    setup,
    tracking_uri,
)
from tasks.registry import audit
from tasks.registry.digests import encode, tree_digests
from tasks.registry.names import (
    ACTIVE_ALIAS,
    CHECK_TAG_PREFIX,
    METRIC_TAG_PREFIX,
    STATUS_ACTIVE,
    TAG_ALIAS_WITHHELD,
    TAG_DATA_MD5,
    TAG_DOMAIN,
    TAG_FILES,
    TAG_OWNER,
    TAG_REVOKED_AT,
    TAG_REVOKED_BY,
    TAG_REVOKED_REASON,
    TAG_SHA256,
    TAG_STATUS,
    VersionRef,
    expert_model_name,
)
from tasks.registry.store import client, ensure_model, get_version, ref_of, versions

REGISTER_STAGE = "register"
TAG_TRAINING_RUN = "training_run_id"  # on a version and its registration run: the MLflow run that trained it
TRAINING_STAGE = {"public": "train_public"}  # the stage that trains a domain's model (an owner's: train_expert)
TAG_DP_EPSILON = "dp_epsilon"
TAG_EXTRACTION_RATE = "extraction_rate"  # set on an expert version by the extraction attack (tasks.privacy.gate)


def version_description(name: str, version: str, tags: Mapping[str, str]) -> str:
    """A version's card in markdown, what the MLflow UI shows on the version page: owner, data version, weights,
    metrics, DP epsilon, extraction rate, checks and status (re-rendered whenever a check or a revocation changes
    them; the tags stay the record; aliases are left to the UI, which shows where they are now)."""
    status = tags.get(TAG_STATUS, "?")
    lines = [f"# {name} version {version}", "", f"**Status: {status}**"]
    if tags.get(TAG_REVOKED_REASON):
        who, when = tags.get(TAG_REVOKED_BY, "?"), tags.get(TAG_REVOKED_AT, "?")
        lines.append(f"Revoked by {who} at {when}: {tags[TAG_REVOKED_REASON]}")
    if tags.get(TAG_ALIAS_WITHHELD):
        lines.append(f"`{ACTIVE_ALIAS}` withheld: failed check(s) {tags[TAG_ALIAS_WITHHELD]}")
    rows = [
        ("domain", tags.get(TAG_DOMAIN, "")),
        ("owner", tags.get(TAG_OWNER, "")),
        ("data version (DVC md5)", f"`{tags[TAG_DATA_MD5]}`" if tags.get(TAG_DATA_MD5) else "-"),
        ("weights sha256", f"`{tags.get(TAG_SHA256, '')}`"),
        ("git commit", f"`{tags.get(TAG_GIT_COMMIT, '')}`"),
        ("training run", f"`{tags[TAG_TRAINING_RUN]}`" if tags.get(TAG_TRAINING_RUN) else "-"),
        ("DP epsilon", tags.get(TAG_DP_EPSILON, "none (trained without DP)")),
        ("extraction rate", tags.get(TAG_EXTRACTION_RATE, "not measured yet")),
    ]
    rows += [
        (f"check {k[len(CHECK_TAG_PREFIX) :]}", v) for k, v in sorted(tags.items()) if k.startswith(CHECK_TAG_PREFIX)
    ]
    lines += ["", "| | |", "|---|---|", *[f"| {key} | {value} |" for key, value in rows]]
    metrics = sorted((k[len(METRIC_TAG_PREFIX) :], v) for k, v in tags.items() if k.startswith(METRIC_TAG_PREFIX))
    if metrics:
        lines += ["", "| metric | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in metrics]]
    return "\n".join(lines) + "\n"


def describe(mlclient: Any, name: str, version: str | int) -> None:
    """Write the version's description from its current tags (after registration, a check, a revocation)."""
    mv = mlclient.get_model_version(name, str(version))
    text = version_description(name, str(mv.version), dict(mv.tags))
    mlclient.update_model_version(name, str(mv.version), description=text)


class RegistrationRun:
    """The run a registration logs its artifacts to: the active run, or a short run of its own (`register/<domain>`,
    nested under the pipeline run when there is one; `trained_by`: the run that trained what it registers)."""

    def __init__(self, profile: Profile, domain: str, trained_by: str | None = None) -> None:
        self.profile, self.domain, self.trained_by, self.own = profile, domain, trained_by, False

    def __enter__(self) -> str:
        import mlflow

        active = mlflow.active_run()
        if active is not None:
            return active.info.run_id
        setup(self.profile)
        tags = {**lineage_tags(self.profile), TAG_STAGE: REGISTER_STAGE, TAG_RUN_DOMAIN: self.domain}
        if self.trained_by:
            tags[TAG_TRAINING_RUN] = self.trained_by
        run = mlflow.start_run(run_name=f"register/{self.domain}", parent_run_id=parent_run_id(), tags=tags)
        self.own = True
        return run.info.run_id

    def __exit__(self, *exc: Any) -> None:
        import mlflow

        if self.own:
            mlflow.end_run(status="FAILED" if exc[0] else "FINISHED")


def version_tags(
    profile: Profile, domain: str, sha: str, data_md5: str, metrics: Mapping[str, float] | None
) -> dict[str, str]:
    """The lineage tags of a new version: domain, owner, data hash, git commit, weights hash, status, metrics."""
    tags = {
        TAG_DOMAIN: domain,
        TAG_OWNER: profile.domains[domain].owner if domain in profile.domains else "flexo",
        TAG_DATA_MD5: data_md5,
        TAG_GIT_COMMIT: lineage_tags(profile)[TAG_GIT_COMMIT],
        TAG_SHA256: sha,
        TAG_STATUS: STATUS_ACTIVE,
    }
    tags.update({f"{METRIC_TAG_PREFIX}{key}": f"{float(value):.6g}" for key, value in (metrics or {}).items()})
    return tags


def create_version(
    mlclient: Any, name: str, source: str, run_id: str, tags: Mapping[str, str], description: str | None = None
) -> VersionRef:
    """A new version of `name` from the artifacts at `source`, read back with its tags and aliases."""
    mv = mlclient.create_model_version(name, source=source, run_id=run_id, tags=dict(tags), description=description)
    return ref_of(mlclient.get_model_version(name, mv.version))


def training_run(profile: Profile, domain: str, sha: str) -> str | None:
    """The id of the newest run of the experiment that trained `domain`'s model with these weights (its
    `output_sha256` tag), or None (a model trained outside the pipeline, or in another store)."""
    from mlflow import MlflowClient

    mlclient = MlflowClient(tracking_uri(profile))
    experiment = mlclient.get_experiment_by_name(profile.registry.experiment)
    if experiment is None:
        return None
    stage = TRAINING_STAGE.get(domain, "train_expert")
    found = mlclient.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.{TAG_STAGE} = '{stage}' and tags.{TAG_OUTPUT_SHA256} = '{sha}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0].info.run_id if found else None


def register_public(
    profile: Profile, model_dir: Path, data_md5: str, metrics: Mapping[str, float] | None = None
) -> VersionRef:
    """A new `flexo-public` version from M_pub's save_pretrained directory; alias `active` moves to it. An existing
    model adopted as M_pub (`anchor.json` beside its weights) is tagged with where it came from."""
    import mlflow

    weights = Path(model_dir) / WEIGHTS_FILE
    if not weights.exists():
        raise IntegrityError(f"{weights}: M_pub has no single safetensors file; export it with model.export first")
    mlclient = client(profile)
    name = profile.registry.public_model
    ensure_model(mlclient, name, "M_pub: the public OLMo-2-style model every expert is coordinated with.")
    sha = sha256_file(weights)
    trained_by = training_run(profile, "public", sha)
    with RegistrationRun(profile, "public", trained_by) as run_id:
        mlclient.log_artifacts(run_id, str(model_dir), "public")
        if metrics:
            mlflow.log_metrics(dict(metrics))
        source = f"{mlclient.get_run(run_id).info.artifact_uri}/public"
        tags = {**version_tags(profile, "public", sha, data_md5, metrics), **_anchor_tags(model_dir)}
        if trained_by:
            tags[TAG_TRAINING_RUN] = trained_by
        tags[TAG_FILES] = encode(tree_digests(Path(model_dir)))
        ref = create_version(mlclient, name, source, run_id, tags)
    mlclient.set_registered_model_alias(name, ACTIVE_ALIAS, ref.version)
    audit.record(mlclient, name, ref.version, "registered", sha256=ref.sha256)
    audit.record(mlclient, name, ref.version, "alias_set", alias=ACTIVE_ALIAS)
    describe(mlclient, name, ref.version)
    return ref_of(mlclient.get_model_version(name, ref.version))


def _anchor_tags(model_dir: Path) -> dict[str, str]:
    """An adopted M_pub's origin as version tags (source, where from, sha256 of what came in, license, parameter
    count: `tasks.training.anchor`); none for a model pretrained here."""
    path = Path(model_dir) / ANCHOR_FILE
    if not path.exists():
        return {}
    record = json.loads(path.read_text(encoding="utf-8"))
    keys = ("source", "origin", "sha256", "license", "parameters", "moe_host")
    return {f"anchor_{key}": str(record[key]) for key in keys if key in record}


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
    import mlflow

    expert_file = Path(expert_file)
    _check_expert_file(profile, domain, expert_file)
    sha = sha256_file(expert_file)
    mlclient = client(profile)
    name = expert_model_name(profile, domain)
    ensure_model(mlclient, name, f"The {domain} expert of owner {profile.domains[domain].owner}: FFN + router row.")
    tags = _expert_tags(profile, domain, sha, data_md5, metrics, checks, dp_epsilon)
    trained_by = training_run(profile, domain, sha)
    if trained_by:
        tags[TAG_TRAINING_RUN] = trained_by
    expert_card = {
        "domain": domain,
        "owner": tags[TAG_OWNER],
        "sha256": sha,
        "data_md5": data_md5,
        "git_commit": tags[TAG_GIT_COMMIT],
        "metrics": dict(metrics or {}),
        "checks": dict(checks or {}),
        "dp_epsilon": dp_epsilon,
        **dict(card or {}),
    }
    with tempfile.TemporaryDirectory() as staging, RegistrationRun(profile, domain, trained_by) as run_id:
        _stage_expert(Path(staging), expert_file, router_file, expert_card)
        tags[TAG_FILES] = encode(tree_digests(Path(staging)))
        mlclient.log_artifacts(run_id, staging, f"expert-{domain}")
        if metrics:
            mlflow.log_metrics({f"{domain}.{k}": float(v) for k, v in metrics.items()})
        source = f"{mlclient.get_run(run_id).info.artifact_uri}/expert-{domain}"
        ref = create_version(mlclient, name, source, run_id, tags)
    audit.record(mlclient, name, ref.version, "registered", sha256=sha, data_md5=data_md5)
    _give_active_if_checked(mlclient, name, ref.version, sorted(c for c, ok in (checks or {}).items() if not ok))
    describe(mlclient, name, ref.version)
    return ref_of(mlclient.get_model_version(name, ref.version))


def _check_expert_file(profile: Profile, domain: str, expert_file: Path) -> None:
    """ConfigError for a domain no owner has; IntegrityError when the file holds another domain's expert."""
    from safetensors import safe_open

    if domain not in profile.closed_domains:
        raise ConfigError(f"domain '{domain}' is not a data owner's domain; choose one of {profile.closed_domains}")
    with safe_open(str(expert_file), framework="pt") as handle:
        file_domain = (handle.metadata() or {}).get("domain")
    if file_domain != domain:
        raise IntegrityError(f"{expert_file}: holds the expert of domain '{file_domain}', not '{domain}'")


def _expert_tags(
    profile: Profile,
    domain: str,
    sha: str,
    data_md5: str,
    metrics: Mapping[str, float] | None,
    checks: Mapping[str, bool] | None,
    dp_epsilon: float | None,
) -> dict[str, str]:
    """An expert version's tags: the lineage tags, every check's verdict and the DP budget spent."""
    tags = version_tags(profile, domain, sha, data_md5, metrics)
    tags.update({f"{CHECK_TAG_PREFIX}{check}": _verdict(passed) for check, passed in (checks or {}).items()})
    if dp_epsilon is not None:
        tags[TAG_DP_EPSILON] = f"{dp_epsilon:.6g}"
    return tags


def _verdict(passed: bool) -> str:
    return "passed" if passed else "failed"


def _stage_expert(staging: Path, expert_file: Path, router_file: Path | None, card: Mapping[str, Any]) -> None:
    """The artifacts of an expert version: its file, its router row (if given) and its card."""
    shutil.copyfile(expert_file, staging / EXPERT_FILE)
    if router_file is not None:
        shutil.copyfile(router_file, staging / ROUTER_ROW_FILE)
    (staging / EXPERT_CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True))


def _give_active_if_checked(mlclient: Any, name: str, version: str, failed: list[str]) -> None:
    """`active` moves to the new version when no check failed; otherwise the version records why it was withheld."""
    if failed:
        mlclient.set_model_version_tag(name, version, TAG_ALIAS_WITHHELD, ",".join(failed))
        audit.record(mlclient, name, version, "alias_withheld", alias=ACTIVE_ALIAS, failed_checks=failed)
    else:
        mlclient.set_registered_model_alias(name, ACTIVE_ALIAS, version)
        audit.record(mlclient, name, version, "alias_set", alias=ACTIVE_ALIAS)


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
    mlclient.set_model_version_tag(name, ref.version, f"{CHECK_TAG_PREFIX}{check}", _verdict(passed))
    audit.record(mlclient, name, ref.version, "check", check=check, passed=passed, detail=detail)
    if passed or ACTIVE_ALIAS not in ref.aliases:
        describe(mlclient, name, ref.version)
        return get_version(profile, name, ref.version)
    mlclient.delete_registered_model_alias(name, ACTIVE_ALIAS)
    audit.record(mlclient, name, ref.version, "alias_removed", alias=ACTIVE_ALIAS, failed_check=check)
    fallback = _last_good_before(profile, name, ref)
    if fallback is not None:
        mlclient.set_registered_model_alias(name, ACTIVE_ALIAS, fallback.version)
        audit.record(mlclient, name, fallback.version, "alias_set", alias=ACTIVE_ALIAS, replaces=ref.version)
        describe(mlclient, name, fallback.version)
    describe(mlclient, name, ref.version)
    return get_version(profile, name, ref.version)


def _last_good_before(profile: Profile, name: str, ref: VersionRef) -> VersionRef | None:
    """The newest version older than `ref` that is active and failed no check."""
    return next(
        (
            earlier
            for earlier in versions(profile, name)
            if int(earlier.version) < int(ref.version)
            and earlier.status == STATUS_ACTIVE
            and not any(k.startswith(CHECK_TAG_PREFIX) and v == "failed" for k, v in earlier.tags.items())
        ),
        None,
    )
