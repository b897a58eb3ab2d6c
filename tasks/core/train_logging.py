"""Where training reports its parameters and metrics: one small interface, so MLflow can sit behind it.

Why a Protocol: training must not care whether metrics go to the console, to MLflow or to both; the Prefect layer
implements `TrainLogger` with `mlflow.log_params` / `mlflow.log_metrics` (`flows.mlflow_logging`) and passes it in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from rich.console import Console
from rich.table import Table


@runtime_checkable
class TrainLogger(Protocol):
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Once per run, before training: the resolved settings (flat keys, str-able values)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Scalars at an optimizer step (train_* every few steps, val_* at every evaluation, final values at the
        end)."""


class ConsoleLogger:
    """Parameters as a table at the start, evaluation and final metrics as one line each (stderr, rich)."""

    def __init__(self, console: Console | None = None, prefix: str = "") -> None:
        self.console = console or Console(stderr=True)
        self.prefix = prefix

    def log_params(self, params: Mapping[str, Any]) -> None:
        table = Table(title=f"{self.prefix} settings".strip(), show_header=False, box=None)
        for key in sorted(params):
            table.add_row(key, str(params[key]))
        self.console.print(table)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if not any(key.startswith(("val_", "final_")) for key in metrics):
            return  # per-step train metrics are on the progress bar
        text = "  ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        self.console.print(f"{self.prefix} step {step}: {text}".strip(), highlight=False)


class FanOutLogger:
    """Send everything to several loggers (e.g. console + MLflow)."""

    def __init__(self, loggers: Sequence[TrainLogger]) -> None:
        self.loggers = list(loggers)

    def log_params(self, params: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_params(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step)
