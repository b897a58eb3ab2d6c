"""The plain bodies of the Prefect tasks, one per step of `flows.steps.STEPS`.

Why bodies and not the area functions themselves: Prefect keys its cache on a task's arguments, so each body takes,
besides what its area function needs, the content hashes its result depends on (data, upstream weights, `code`: the
step's code fingerprint) and passes on only the former. Each returns a small JSON-able dict (paths, sha256s, metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flows.mlflow_logging import tracked
from flows.steps import STEPS, call
from tasks.core.config import Profile
from tasks.core.hashing import file_sha256

PROGRESS_LOG_S = 15.0  # how often a long ingest reports how far it got


def prepare_domain(profile: Profile, domain: str, code: str) -> dict[str, Any]:
    """Ingest, validate (GX, quarantine) and fingerprint one domain: the part that needs no other domain. A long
    ingest (hundreds of MB at scale) logs its document count every PROGRESS_LOG_S seconds (console and Prefect UI)."""
    return call("prepare_domain", profile, domain, progress=_ingest_progress(domain))


def _ingest_progress(domain: str) -> Callable[[int], None]:
    import time

    from prefect import get_run_logger

    logger, last = get_run_logger(), [time.monotonic()]

    def report(documents: int) -> None:
        if time.monotonic() - last[0] >= PROGRESS_LOG_S:
            last[0] = time.monotonic()
            logger.info("%s: %s documents ingested so far", domain, f"{documents:,}")

    return report


def split_domain(profile: Profile, domain: str, prepared: Mapping[str, str], code: str) -> dict[str, Any]:
    """Split, dedup and decontaminate one domain against every prepared domain (`prepared`: their results' hashes)."""
    return call("split_domain", profile, domain)


def check_disjoint(profile: Profile, builds: Mapping[str, str], code: str) -> dict[str, Any]:
    return call("check_disjoint", profile)


def check_benchmark(profile: Profile, domains: list[str], data_hashes: Mapping[str, str], code: str) -> dict[str, Any]:
    """Whether every FLEXMIX task can be built from these domains' test splits (before any training)."""
    return call("check_benchmark", profile, domains)


def train_tokenizer(profile: Profile, public_hash: str, code: str) -> dict[str, Any]:
    return call("train_tokenizer", profile)


def version_domain(profile: Profile, domain: str, data_hash: str, code: str) -> dict[str, Any]:
    """`dvc add` + push to the owner's remote (retried with backoff: the remote can be briefly unreachable)."""
    return call("version_domain", profile, domain)


def write_card(profile: Profile, domain: str, data_hash: str, tokenizer_hash: str, code: str) -> dict[str, Any]:
    """The domain's data card (reports/data/cards/<domain>.md|json), after versioning so it carries the DVC md5."""
    out = call("write_card", profile, domain)
    return {**out, "path": out["value"]}


def record_shared_stages(profile: Profile) -> dict[str, Any]:
    """`dvc commit` of the cross-domain DVC stages after a full data build (cheap; not cached: dvc.lock is the
    record)."""
    return call("record_shared_stages", profile)


def train_public(profile: Profile, public_hash: str, tokenizer_hash: str, code: str) -> dict[str, Any]:
    return tracked("train_public", profile, None)


def register_public(
    profile: Profile, model_dir: str, weights_sha: str, data_md5: str, metrics: Mapping[str, float]
) -> dict[str, Any]:
    return call("register_public", profile, Path(model_dir), data_md5, dict(metrics))


def embed_domain(profile: Profile, domain: str, data_hash: str, code: str) -> dict[str, Any]:
    out = call("embed_domain", profile, domain)
    return {**out, "path": out["value"], "sha256": file_sha256(out["value"])}


def train_expert(
    profile: Profile, domain: str, data_hash: str, public_sha: str, public_row_sha: str, router_sha: str, code: str
) -> dict[str, Any]:
    """Coordinated training of one expert against the frozen M_pub (MLflow stage run `train_expert/<domain>`)."""
    return tracked("train_expert", profile, domain)


def train_dense(profile: Profile, domain: str, data_hash: str, public_sha: str, code: str) -> dict[str, Any]:
    """The dense domain model (baselines and the extraction study)."""
    return tracked("train_dense", profile, domain)


def register_expert(
    profile: Profile,
    domain: str,
    expert_file: str,
    expert_sha: str,
    data_md5: str,
    metrics: Mapping[str, float],
    router_file: str | None,
    dp_epsilon: float | None = None,
) -> dict[str, Any]:
    return call(
        "register_expert",
        profile,
        domain,
        Path(expert_file),
        data_md5,
        metrics=dict(metrics),
        router_file=Path(router_file) if router_file else None,
        dp_epsilon=dp_epsilon,
    )


def verify_assembly(profile: Profile) -> dict[str, Any]:
    """The stored bytes of every active expert and of the serving MoE against the registry (never cached: a cache
    hit of `assemble` is only trusted after this passed); says whether the assembly must be redone."""
    return call("verify_assembly", profile)


def assemble(profile: Profile, expert_shas: Mapping[str, str], code: str) -> dict[str, Any]:
    """Assemble every active expert (sha256-verified from the registry) and register `flexo-moe` as `serving`."""
    return call("assemble", profile)


def train_ablation(
    profile: Profile, variant: str, domain: str, data_hash: str, public_sha: str, code: str
) -> dict[str, Any]:
    """One expert retrained under a router ablation (MLflow stage run `train_ablation/<domain>`, param `variant`)."""
    return tracked("train_ablation", profile, domain, variant=variant)


def assemble_ablation(profile: Profile, variant: str, expert_shas: Mapping[str, str], code: str) -> dict[str, Any]:
    """M_pub + the variant's experts merged into the variant's own MoE (not registered: a research artifact)."""
    return call("assemble_ablation", profile, variant)


def evaluate(
    profile: Profile, moe_sha: str, code: str, ablation_shas: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """FLEXMIX-small (cached on the serving MoE's sha256, the ablation MoEs' and the code)."""
    return tracked("evaluate", profile, None)


def attack(profile: Profile, domain: str, expert_sha: str, code: str) -> dict[str, Any]:
    return call("attack", profile, domain)


def revoke(profile: Profile, domain: str, version: str, reason: str, by: str | None = None) -> dict[str, Any]:
    return call("revoke", profile, domain, version, reason, by=by)


def follow_revocations(profile: Profile) -> dict[str, Any]:
    """Revocations made in the MLflow UI, client or REST reach `serving`: re-assemble without withdrawn experts."""
    return call("follow_revocations", profile)


def active_experts(profile: Profile) -> dict[str, Any]:
    """The registry's active, non-revoked expert versions: {domain: {version, sha256}} (a registry read: retried)."""
    refs = STEPS["active_experts"].function(profile)
    return {ref.domain: {"version": str(ref.version), "sha256": ref.sha256} for ref in refs}


BODIES: dict[str, Callable[..., dict[str, Any]]] = {
    body.__name__: body
    for body in (
        prepare_domain,
        split_domain,
        check_disjoint,
        check_benchmark,
        train_tokenizer,
        version_domain,
        write_card,
        record_shared_stages,
        train_public,
        register_public,
        embed_domain,
        train_expert,
        train_dense,
        register_expert,
        verify_assembly,
        assemble,
        train_ablation,
        assemble_ablation,
        evaluate,
        attack,
        revoke,
        follow_revocations,
        active_experts,
    )
}
