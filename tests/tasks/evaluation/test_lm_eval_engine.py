"""lm-evaluation-harness as the engine: on a tiny world (real BPE tokenizer, real transformers models, the real
assembled MoE), every flexo model run through lm-eval (`--model flexo`, the FLEXMIX task configs over local JSONL)
gives exactly the per-item log-likelihoods, accuracies and bits per byte of flexo's own harness, and flexo's paired
bootstrap computed from lm-eval's logged samples equals the report's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from model.optout import masked_experts
from model.scoring import Scores, model_scorer
from tasks.core.errors import ConfigError
from tasks.core.tokenizer import load_tokenizer
from tasks.evaluation.families import score_dense_and_btm, score_flexolmo, score_prompt_routing, score_soups
from tasks.evaluation.inputs import load_models, load_test_frames, tokenize_tasks
from tasks.evaluation.lm_eval_metrics import task_scores
from tasks.evaluation.lm_eval_tasks import lm_eval_name
from tasks.evaluation.metrics import bootstrap_indices, score_model
from tasks.evaluation.mixed import MIXED_TASK, build_mixed, with_mixed
from tasks.evaluation.results import FLEX, PROMPT, PUBLIC, SOUP_UNIFORM, SOUP_WEIGHTED, dense_name
from tasks.evaluation.runner import EvalRun, Runner
from tasks.evaluation.tasks import build_tasks, write_lm_eval_files
from tests.profiles import paths_under
from tests.tasks.eval_world import build_world

lm_eval = pytest.importorskip("lm_eval")  # a declared dependency: skipped only in an install without it

from lm_eval.tasks import TaskManager  # noqa: E402

from tasks.evaluation.lm_eval_model import FlexoLM  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_profile):
    """The tiny world, its FLEXMIX tasks written for lm-eval, and flexo's own harness's scores of every model."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = tmp_path_factory.mktemp("lmevalworld")
    runtime = tiny_profile.runtime.model_copy(update={"num_threads": 1})
    profile = tiny_profile.model_copy(
        update={"paths": tiny_profile.paths.model_copy(update=paths_under(root)), "runtime": runtime}
    )
    build_world(profile)
    torch.set_num_threads(1)
    tokenizer = load_tokenizer(profile)
    frames = load_test_frames(profile)
    tasks = with_mixed(build_tasks(frames, profile.eval, profile.seed), build_mixed(frames, profile.eval, profile.seed))
    assert tasks[-1].spec.name == MIXED_TASK  # the mixed-domain documents are an lm-eval task too
    task_dir = root / "lm_eval_tasks"
    write_lm_eval_files(tasks, task_dir)
    requests, layout = tokenize_tasks(tasks, tokenizer, profile.model.max_seq_len)
    texts = [choice for task in tasks for item in task.items for choice in item.choices]
    cut = [n < len(text.encode("utf-8")) for n, text in zip(layout.n_bytes, texts, strict=True)]
    assert any(cut), "no target is cut to the window: the scored-bytes path would go untested"
    device = torch.device("cpu")
    runner = Runner(profile, device, tokenizer.pad_token_id, None, "fp32")
    run = EvalRun(profile, device, tokenizer, tasks, requests, layout, load_models(profile, device), runner)
    for family in (score_dense_and_btm, score_soups, score_prompt_routing, score_flexolmo):
        family(run)
    with masked_experts(run.models.moe, [run.models.experts.index("code")]):
        run.results["exclude code"] = runner.run("exclude", requests, model_scorer(run.models.moe, "x"))["x"]
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    return profile, tasks, layout, run.results, manager, root


def _through_lm_eval(profile, tasks, manager, **model_args) -> dict:
    lm = FlexoLM(profile=profile, **model_args)
    names = [lm_eval_name(t.spec.name) for t in tasks]
    out = lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, log_samples=True, bootstrap_iters=0)
    assert out is not None
    return out


def _logliks(samples: list[dict]) -> list[list[float]]:
    """Per item (in item order), the log-likelihood of each choice as lm-eval logged it."""
    ordered = sorted(samples, key=lambda s: int(s["doc_id"]))
    return [[float(r[0][0]) for r in s["resps"]] for s in ordered]


CASES = {
    PUBLIC: {"model": "public"},
    dense_name("code"): {"model": "dense:code"},
    "BTM (top-2)": {"model": "btm"},
    SOUP_UNIFORM: {"model": "soup"},
    SOUP_WEIGHTED: {"model": "soup_weighted"},
    PROMPT: {"model": "prompt"},
    FLEX: {"model": "moe"},
    "exclude code": {"model": "moe", "exclude": "code"},
}


@pytest.mark.parametrize("row", list(CASES))
def test_lm_eval_gives_the_harness_numbers(world, row):
    profile, tasks, layout, reference, manager, _ = world
    scores: Scores = reference[row]
    out = _through_lm_eval(profile, tasks, manager, **CASES[row])
    resamples = bootstrap_indices(tasks, profile.eval.bootstrap, profile.seed)
    ours = score_model(tasks, layout, scores, resamples)
    theirs = task_scores(tasks, out["samples"], resamples)
    for task, index in zip(tasks, layout.offsets, strict=True):
        name = lm_eval_name(task.spec.name)
        assert _logliks(out["samples"][name]) == scores.loglik[index].tolist(), (row, name)
        assert theirs[task.spec.name].value == ours[task.spec.name].value, (row, name)
        np.testing.assert_array_equal(theirs[task.spec.name].replicates, ours[task.spec.name].replicates)
        metric = "bits_per_byte" if task.spec.kind == "bpb" else "acc"
        assert out["results"][name][f"{metric},none"] == pytest.approx(ours[task.spec.name].value, rel=1e-12)


def test_model_args_are_checked(world):
    profile, *_ = world
    with pytest.raises(ConfigError, match="not in this model"):
        FlexoLM(profile=profile, model="moe", exclude="nonexistent")
    with pytest.raises(ConfigError, match="either experts"):
        FlexoLM(profile=profile, model="moe", experts="code", exclude="math")
    with pytest.raises(ConfigError, match="not a flexo model"):
        FlexoLM(profile=profile, model="gpt2")
    with pytest.raises(ConfigError, match="unknown flexo model_args"):
        FlexoLM(profile=profile, model="moe", exlcude="code")


def test_rolling_and_generation_requests(world):
    """The two request types FLEXMIX does not use still answer: a rolling log-likelihood equals the sum over its
    windows, and greedy generation stops at the stop string."""
    from lm_eval.api.instance import Instance

    profile, tasks, *_ = world
    lm = FlexoLM(profile=profile, model="moe", experts="code")
    text = tasks[0].items[0].context + tasks[0].items[0].choices[0]
    rolling = Instance("loglikelihood_rolling", {}, (text,), 0)
    (total,) = lm.loglikelihood_rolling([rolling])
    tokens = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    first = Instance("loglikelihood", {}, (lm.tokenizer.eos_token, text), 0)
    assert total < 0 and len(tokens) > profile.model.max_seq_len  # several windows
    assert lm.loglikelihood([first])[0][0] < 0
    (generated,) = lm.generate_until([Instance("generate_until", {}, ("def compute", {"until": ["\n"]}), 0)])
    assert "\n" not in generated


@pytest.mark.slow  # a fresh interpreter indexes lm-eval's built-in task folders (~45 s on 2 cores)
def test_shell_command_scores_a_moe_offline(world, tmp_path):
    """lm-eval's own command, `lm_eval --model flexo ... --tasks flexmix --include_path <folder>`, from a shell, hub
    off: it finds the `flexo` type through the installed start-up hook (lm_eval_flexo_hook), and the results file holds
    the harness's scores of the MoE with an expert excluded."""
    profile, tasks, layout, reference, _, root = world
    raw = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    raw["profiles"]["tiny"]["paths"] = paths_under(root)
    raw["profiles"]["tiny"].setdefault("runtime", {})["num_threads"] = 1
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    folder = subprocess.run(
        [sys.executable, "-m", "tasks.evaluation.lm_eval_cli", "write-tasks", "--profile", "tiny", "--params", params],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    command = [
        str(Path(sys.executable).with_name("lm_eval")), "--model", "flexo",
        "--model_args", f"profile=tiny,params={params},model=moe,exclude=code",
        "--tasks", "flexmix", "--include_path", folder, "--output_path", str(tmp_path / "out"),
        "--batch_size", "auto",  # the profile's batches, so the sums run in the harness's order
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}  # offline by flexo's own doing
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]
    ours = score_model(tasks, layout, reference["exclude code"], bootstrap_indices(tasks, 2, 0))
    assert set(results) == {lm_eval_name(t.spec.name) for t in tasks}
    for task in tasks:
        metric = "bits_per_byte" if task.spec.kind == "bpb" else "acc"
        value = results[lm_eval_name(task.spec.name)][f"{metric},none"]
        assert value == pytest.approx(ours[task.spec.name].value, rel=1e-12), task.spec.name


def test_other_lm_eval_models_run_the_flexmix_configs(world):
    """A model type of lm-eval's own (`dummy`: plain (loglik, is_greedy) pairs) is still found with `flexo`
    registered, and runs the FLEXMIX configs: bits per byte then divides by the whole target's bytes."""
    _, tasks, _, _, manager, _ = world
    names = [lm_eval_name(t.spec.name) for t in tasks]
    out = lm_eval.simple_evaluate(model="dummy", tasks=names, task_manager=manager, bootstrap_iters=0)
    assert out is not None and set(out["results"]) == set(names)
    bpb = next(t for t in tasks if t.spec.kind == "bpb")
    samples = sorted(out["samples"][lm_eval_name(bpb.spec.name)], key=lambda s: int(s["doc_id"]))
    assert [n for _, n in (s["bits_per_byte"] for s in samples)] == [
        len(item.choices[0].encode("utf-8")) for item in bpb.items
    ]
