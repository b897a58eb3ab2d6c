"""What one attack found: per-model extraction rates, the calibration that shows the attack works, the gate's verdict,
and the report.json they are written to.

Why a module of its own: the attack produces these, while the CLI, the MLflow record and the benchmarks only read
them; none of those readers needs the models or the sampling.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from model.extraction import ExtractionResult
from tasks.core.errors import FlexoError

REPORT_FILE = "report.json"

# Model keys in the result, in report order.
PUBLIC, DENSE, FLEXOLMO, FLEXOLMO_WITHOUT, FLEXOLMO_DP = (
    "public",
    "dense",
    "flexolmo",
    "flexolmo_without",
    "flexolmo_dp",
)


class CalibrationError(FlexoError):
    """The overfitted calibration model was not extracted: the attack cannot detect memorisation, its zeros mean
    nothing."""


@dataclass(frozen=True)
class ModelRate:
    """One model's extraction numbers. `rate` counts the shared prefix (paper); `rate_no_prefix` compares
    continuations only."""

    name: str
    description: str
    num_docs: int
    extracted: int
    rate: float
    extracted_no_prefix: int
    rate_no_prefix: float
    mean_similarity: float
    mean_similarity_no_prefix: float
    seconds: float
    doc_scores: list[dict] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, name: str, description: str, result: ExtractionResult, seconds: float, doc_ids: list[str]) -> ModelRate:
        scores = [
            {
                "id": doc_ids[s.doc_index],
                "offset": s.offset,
                "best": round(s.best_with_prefix, 4),
                "best_no_prefix": round(s.best_without_prefix, 4),
                "best_sample": s.best_sample,
            }
            for s in result.scores
        ]
        return cls(
            name=name,
            description=description,
            num_docs=result.num_docs,
            extracted=result.extracted(True),
            rate=result.rate(True),
            extracted_no_prefix=result.extracted(False),
            rate_no_prefix=result.rate(False),
            mean_similarity=result.mean_best(True),
            mean_similarity_no_prefix=result.mean_best(False),
            seconds=seconds,
            doc_scores=scores,
        )


@dataclass(frozen=True)
class Calibration:
    """The sanity check: M_pub overfitted on `num_docs` windows must be extracted at >= `required_rate`."""

    rate: ModelRate
    epochs: int
    final_loss: float
    required_rate: float
    seconds: float

    @property
    def passed(self) -> bool:
        return self.rate.rate >= self.required_rate


@dataclass(frozen=True)
class AttackResult:
    """Everything one attack on one domain found, and the gate's decision on the expert."""

    profile: str
    domain: str
    expert_sha256: str
    train_docs: int  # documents in the train split
    eligible_docs: int  # of which at least window_tokens long
    too_short_docs: int  # shorter than the window: cannot be attacked with this protocol (counted, not hidden)
    settings: dict
    calibration: Calibration
    models: dict[str, ModelRate]
    extraction_rate: float  # the gate's number: FlexOlmo with the expert, prefix counted
    admitted: bool
    reason: str
    report_path: Path
    seconds: float

    def rates(self) -> dict[str, float]:
        return {name: m.rate for name, m in self.models.items()}


def write_report(result: AttackResult) -> Path:
    """report.json beside the attack's run: settings, counts, per-model rates and per-document best samples."""
    result.report_path.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(result)
    data["report_path"] = str(result.report_path)
    data["calibration"]["passed"] = result.calibration.passed
    result.report_path.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    return result.report_path


def summary_rows(result: AttackResult) -> list[tuple[str, str, str, str, str, str]]:
    """(model, extracted/docs, rate, rate without prefix, mean best similarity with / without prefix) rows for
    tables."""
    models = [result.calibration.rate, *result.models.values()]
    return [
        (
            m.name,
            f"{m.extracted}/{m.num_docs}",
            f"{m.rate:.1%}",
            f"{m.rate_no_prefix:.1%}",
            f"{m.mean_similarity:.3f}",
            f"{m.mean_similarity_no_prefix:.3f}",
        )
        for m in models
    ]
