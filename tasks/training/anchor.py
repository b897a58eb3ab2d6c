"""`flexo train-public` with an existing model as M_pub (`anchor`): adopt it as it came in, with no training run.

The anchor's checkpoint (`tasks.data.anchor`) is loaded as the dense class FlexOlmo hosts (`model.hosts`) and exported
where a trained M_pub would be (`RunPaths.public_model_dir`: one safetensors file, fp32 as every stage loads M_pub, plus
the anchor's tokenizer), with `anchor.json` beside the weights: source, where from, sha256 of what came in, license,
parameter count. Experts, dense baselines, assembly, evaluation and the attack then read it like any M_pub, and every
expert is bound to the sha256 of these weights.
"""

from __future__ import annotations

import json

from tasks.core.artifacts import ANCHOR_FILE, RunPaths
from tasks.core.config import Profile
from tasks.core.tokenizer import load_tokenizer
from tasks.core.train_logging import ConsoleLogger, TrainLogger
from tasks.data.anchor import resolve_anchor
from tasks.training.outcome import TrainOutcome, write_result


def adopt_anchor(profile: Profile, logger: TrainLogger | None = None) -> TrainOutcome:
    """Export the profile's anchor as M_pub and record where it came from; returns the outcome a training would."""
    from model.export import export_pretrained
    from model.hosts import host_of
    from model.public import load_public_model

    anchor = resolve_anchor(profile)
    paths = RunPaths(profile)
    load_tokenizer(profile)  # the data stage took the anchor's tokenizer: a clear error when it has not run
    model = load_public_model(str(anchor.checkpoint_dir))
    parameters = model.num_parameters()
    sha = export_pretrained(model, paths.public_model_dir, paths.tokenizer_dir)
    record = {
        **anchor.record(),
        "parameters": parameters,
        "model_type": model.config.model_type,
        "moe_host": host_of(model.config),
        "weights_sha256": sha,
    }
    (paths.public_model_dir / ANCHOR_FILE).write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    params = {f"anchor_{key}": value for key, value in record.items() if key != "checkpoint_dir"}
    outcome = TrainOutcome(
        kind="public",
        domain="public",
        sha256=sha,
        metrics={"parameters": float(parameters)},
        checkpoint_dir=str(anchor.checkpoint_dir),
        model_dir=str(paths.public_model_dir),
        params=params,
    )
    write_result(paths.public_dir, outcome)
    log = logger or ConsoleLogger(prefix="public")
    log.log_params(params)
    log.log_metrics(outcome.metrics, 0)
    return outcome
