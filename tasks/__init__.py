"""The pipeline's areas as plain functions, one package per area (core <- data <- training <- registry <- evaluation,
privacy); the Prefect layer that wires them lives in `flows/`.

Importing this package first makes the process offline and telemetry-free (see `tasks.core.environment`).
"""

from tasks.core.environment import apply_offline_environment

apply_offline_environment()
