"""The attack's record: its rates logged to an MLflow stage run, and the gate's verdict written onto every registered
version of the attacked expert file (tags and the registry's `extraction` check, which moves the `active` alias).

Why apart from the attack: the attack runs without a tracking store (`flexo attack --no-mlflow`, the benchmarks); only
this module needs MLflow and the registry.
"""

from __future__ import annotations

from tasks.core.config import Profile
from tasks.privacy.gate import (
    GATE_CHECK,
    TAG_ADMISSION,
    TAG_ADMISSION_REASON,
    TAG_EXTRACTION_RATE,
    TAG_EXTRACTION_RATE_NO_PREFIX,
)
from tasks.privacy.results import FLEXOLMO, AttackResult


def record_attack(profile: Profile, result: AttackResult) -> str | None:
    """Log the rates to an MLflow run; tag the registered expert version(s) whose sha256 matches and pass the gate's
    verdict to the registry (`record_check`: a refusal takes the `active` alias away). Returns the newest such
    version."""
    from tasks.registry import registry

    _log_run(profile, result)
    name = registry.expert_model_name(profile, result.domain)
    matching = [v for v in registry.versions_if_any(profile, name) if v.sha256 == result.expert_sha256]
    if not matching:
        return None
    tags = {
        TAG_EXTRACTION_RATE: f"{result.extraction_rate:.6f}",
        TAG_EXTRACTION_RATE_NO_PREFIX: f"{result.models[FLEXOLMO].rate_no_prefix:.6f}",
        TAG_ADMISSION: "admitted" if result.admitted else "refused",
        TAG_ADMISSION_REASON: result.reason,
    }
    client = registry.client(profile)
    for version in matching:
        for key, value in tags.items():
            client.set_model_version_tag(name, version.version, key, value)
        registry.record_check(profile, result.domain, version.version, GATE_CHECK, result.admitted, result.reason)
    return max((v.version for v in matching), key=int)


def _log_run(profile: Profile, result: AttackResult) -> None:
    """One `attack` stage run: every model's rates, the calibration's, the gate's verdict and report.json."""
    import mlflow
    from tasks.core import tracking

    with tracking.stage_run(profile, "attack", result.domain, params={"attack": result.settings}):
        metrics = {f"extraction_rate.{n}": m.rate for n, m in result.models.items()}
        metrics.update({f"extraction_rate_no_prefix.{n}": m.rate_no_prefix for n, m in result.models.items()})
        metrics.update(
            {
                "extraction_rate.calibration": result.calibration.rate.rate,
                "extraction_rate": result.extraction_rate,
                "attack_seconds": result.seconds,
            }
        )
        tracking.log_metrics(metrics)
        mlflow.set_tags(
            {TAG_ADMISSION: "admitted" if result.admitted else "refused", "expert_sha256": result.expert_sha256}
        )
        mlflow.log_artifact(str(result.report_path), artifact_path="attack")
