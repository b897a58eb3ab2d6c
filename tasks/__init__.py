"""The pipeline's steps as plain functions with thin Prefect `@task` wrappers.

Importing this package first makes the process offline and telemetry-free (see `tasks.environment`).
"""

from tasks.environment import apply_offline_environment

apply_offline_environment()
