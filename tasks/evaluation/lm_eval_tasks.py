"""FLEXMIX tasks as lm-evaluation-harness task configs over the local JSONL files `write_lm_eval_files` writes.

Why every kind is a `loglikelihood` request with our own `process_results`: lm-eval's built-in bits per byte scores a
whole document (`loglikelihood_rolling`) and its multiple-choice accuracy divides by the bytes of the untruncated
choice, while FLEXMIX scores a continuation after a prefix and divides by the bytes actually scored (a target cut to
the model's window counts only what was kept). `tasks.evaluation.lm_eval_metrics` reads those bytes from the flexo
model's results and falls back to the text's bytes for any other lm-eval model, so `hf` or any other model type runs
the same configs. The data path is absolute: lm-eval reads it through `datasets`' packaged `json` builder, which
needs no hub access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tasks.evaluation.tasks import Task

TAG = "flexmix"  # `--tasks flexmix` runs every FLEXMIX task of the folder
PREFIX = "flexmix_"
METRICS = "tasks.evaluation.lm_eval_metrics"

# kind -> (lm-eval output type, our process_results, metric, lm-eval aggregation)
_KINDS: dict[str, tuple[str, str, str, str]] = {
    "bpb": ("loglikelihood", "bpb_results", "bits_per_byte", "bits_per_byte"),
    "mc": ("multiple_choice", "mc_results", "acc", "mean"),
    "em": ("loglikelihood", "em_results", "acc", "mean"),
}


def lm_eval_name(task_name: str) -> str:
    """The lm-eval task name of a FLEXMIX task (`news_mc` -> `flexmix_news_mc`)."""
    return PREFIX + task_name


def flexo_name(lm_eval_task: str) -> str:
    """The FLEXMIX task name of an lm-eval task name (`flexmix_news_mc` -> `news_mc`)."""
    if not lm_eval_task.startswith(PREFIX):
        raise ValueError(f"{lm_eval_task} is not a FLEXMIX task (its name does not start with {PREFIX})")
    return lm_eval_task[len(PREFIX) :]


def task_config(task: Task, data: Path) -> dict[str, Any]:
    """The config of one task, without its `process_results` (a YAML tag `yaml.safe_dump` cannot write)."""
    output_type, _, metric, aggregation = _KINDS[task.spec.kind]
    config: dict[str, Any] = {
        "task": lm_eval_name(task.spec.name),
        "tag": [TAG],
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": output_type,
        "doc_to_text": "context",  # a field name: the text as written, no template rendering
        "doc_to_target": "gold" if task.spec.kind == "mc" else "target",
        "target_delimiter": "",
        "metric_list": [{"metric": metric, "aggregation": aggregation, "higher_is_better": task.spec.higher_is_better}],
        "metadata": {
            "version": 1.0,
            "domain": task.spec.domain,
            "kind": task.spec.kind,
            "chance": task.spec.chance,
            "items": len(task.items),
            "description": task.spec.description,
        },
    }
    if task.spec.kind == "mc":
        config["doc_to_choice"] = "choices"
    return config


def write_task_config(task: Task, data: Path) -> Path:
    """`<name>.yaml` beside `data`, with `process_results` pointing at our metric for the task's kind."""
    path = data.with_suffix(".yaml")
    body = yaml.safe_dump(task_config(task, data), sort_keys=False, allow_unicode=True)
    path.write_text(body + f"process_results: !function {METRICS}.{_KINDS[task.spec.kind][1]}\n", encoding="utf-8")
    return path
