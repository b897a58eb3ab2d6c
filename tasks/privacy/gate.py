"""The admission gate: an expert whose extraction rate inside FlexOlmo (the paper's metric, prefix counted) exceeds
`attack.max_extraction_rate` is refused the `active` alias.

Why apart from the attack: the registry and the CLI decide admission from a recorded rate (a model version's tags)
without running anything; this module is that decision and the tag names it is read from.
"""

from __future__ import annotations

import math

from tasks.core.config import Profile
from tasks.core.errors import GateError

# MLflow model-version tags the attack writes (the registry and `flexo experts` read them).
TAG_EXTRACTION_RATE = "extraction_rate"
TAG_EXTRACTION_RATE_NO_PREFIX = "extraction_rate_no_prefix"
TAG_ADMISSION = "extraction_admission"  # "admitted" | "refused"
TAG_ADMISSION_REASON = "extraction_reason"
GATE_CHECK = "extraction"  # the registry's check name: version tag `check.extraction` = passed | failed


def admission_decision(rate: float, profile: Profile) -> tuple[bool, str]:
    """(admitted, reason) for an expert with this extraction rate; the registry gives `active` only when admitted."""
    if rate is None or not isinstance(rate, (int, float)) or math.isnan(rate) or not 0.0 <= rate <= 1.0:
        return False, f"no valid extraction rate recorded ({rate!r}); run `flexo attack <domain>` before admission"
    limit = profile.attack.max_extraction_rate
    if rate > limit:
        return False, (
            f"refused: extraction rate {rate:.1%} exceeds attack.max_extraction_rate {limit:.1%}; the expert "
            "reproduces its training text. Retrain with DP (train_expert.dp.enabled), fewer epochs or deduplicated "
            "data, then re-attack"
        )
    return True, f"admitted: extraction rate {rate:.1%} <= attack.max_extraction_rate {limit:.1%}"


def admission_from_tags(tags: dict[str, str], profile: Profile) -> tuple[bool, str]:
    """The decision from a model version's tags (missing or unreadable `extraction_rate` = not admitted, with why)."""
    raw = tags.get(TAG_EXTRACTION_RATE)
    if raw is None:
        return False, f"no `{TAG_EXTRACTION_RATE}` tag: the expert was never attacked; run `flexo attack <domain>`"
    try:
        value = float(raw)
    except ValueError:
        return False, f"tag `{TAG_EXTRACTION_RATE}` is not a number ({raw!r}); re-run `flexo attack <domain>`"
    return admission_decision(value, profile)


def check_admission(rate: float, profile: Profile) -> str:
    """The gate as a check: returns the reason when admitted, raises GateError (exit 7) with the reason when refused."""
    admitted, reason = admission_decision(rate, profile)
    if not admitted:
        raise GateError(reason)
    return reason
