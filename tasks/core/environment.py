"""The one place that makes every entry point offline and telemetry-free.

Why: the machines that run flexo reach no model or dataset hub, and data owners must not have usage data sent anywhere.
Every entry point (the `flexo` CLI, DVC stages, Prefect workers, tests, benchmarks) imports `tasks`, whose `__init__`
calls `apply_offline_environment()` before any MLOps library is imported. Values already set by the user win, except the
hub-offline flags, which are forced on (nothing may download weights or data at run time). The one way past that is
an explicit `FLEXO_ALLOW_HUB=1`: the hub flags then become defaults too, so a user with hub access may export
`HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0` to run lm-eval's standard tasks (which download their data) on a flexo model.
flexo itself loads everything from local paths either way. One default is not about the network: the size of
oneDNN's kernel cache, which must be set before the first matmul, so here too.
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
    # oneDNN keeps one compiled kernel per bf16 matmul shape, 1,024 by default; an MoE's experts see a new token count
    # almost every batch, so in a long process the cache only grows (the demo evaluation peaked at 6.05 GiB with the
    # default, 3.61 with 32, on a 2-core Xeon with AMX: benchmarks/RESULTS.md). oneDNN reads this at its first matmul,
    # so setting it here, before any, takes effect.
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "32",
}


HUB_OPT_IN = "FLEXO_ALLOW_HUB"  # "1": the hub flags are defaults a user may override, not forced


def apply_offline_environment() -> dict[str, str]:
    """Set the offline and no-telemetry variables; return what is now in force (for logging and tests)."""
    if os.environ.get(HUB_OPT_IN) == "1":
        for key, value in FORCED.items():
            os.environ.setdefault(key, value)
    else:
        os.environ.update(FORCED)
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in (*FORCED, *DEFAULTS)}
