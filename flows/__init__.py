"""Prefect flows (thin wiring over `tasks/`) and the `flexo` command line."""

import tasks  # noqa: F401  (offline, telemetry-free environment before anything else)
