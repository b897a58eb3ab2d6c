"""Training steps: public pretraining (M_pub), coordinated expert training, dense domain training.

Why here and not in model/: these steps know the project's layout (params.yaml, data/<domain>/*.parquet, the
tokenizer, RunPaths); `model.training` knows only tensors. Each step validates everything it can *before* compute starts
(`tasks.training.inputs`), builds the model, trains with resume (`tasks.training.progress`), writes its artifact and
returns a small JSON-able `TrainOutcome` (`tasks.training.outcome`). The steps live in `tasks.training.dense` (M_pub
and the dense domain models) and `tasks.training.expert`; this module is their entry point for flows and the CLI.

Isolation (invariant 1): `train_public` reads only data/public; `train_expert`/`train_dense` read only data/<domain>
(plus M_pub and the router rows, which are public).
"""

from __future__ import annotations

from tasks.training.dense import train_dense, train_public
from tasks.training.expert import ExpertSetting, train_expert
from tasks.training.outcome import TrainOutcome

__all__ = ["ExpertSetting", "TrainOutcome", "train_dense", "train_expert", "train_public"]
