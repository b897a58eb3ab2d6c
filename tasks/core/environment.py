"""The one place that makes every entry point offline and telemetry-free.

Why: the machines that run flexo reach no model or dataset hub, and data owners must not have usage data sent anywhere.
Every entry point (the `flexo` CLI, DVC stages, Prefect workers, tests, benchmarks) imports `tasks`, whose `__init__`
calls `apply_offline_environment()` before any MLOps library is imported. Values already set by the user win, except the
hub-offline flags, which are always forced on (nothing may download weights or data at run time).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Forced: nothing may reach a hub at run time.
FORCED = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}

# Defaults: telemetry off, embedded local services; a user may override them (e.g. a real MLflow server).
DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GX_ANALYTICS_ENABLED": "False",
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_HOME": str(REPO_ROOT / ".prefect"),
    "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
}


def apply_offline_environment() -> dict[str, str]:
    """Set the offline and no-telemetry variables; return what is now in force (for logging and tests)."""
    os.environ.update(FORCED)
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in (*FORCED, *DEFAULTS)}
