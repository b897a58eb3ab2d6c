"""tasks.training.train on the tiny profile: real parquet splits, a real BPE tokenizer, real M_pub / expert / dense
runs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file

from model.hashing import sha256_file
from model.router import project
from tasks.core.artifacts import RunPaths
from tasks.core.config import REPO_ROOT, load_profile
from tasks.core.datasets import read_texts
from tasks.core.errors import ConfigError, DataError
from tasks.core.tokenizer import load_tokenizer
from tasks.training.expert_file import load_expert
from tasks.training.inputs import tokenize
from tasks.training.train import train_dense, train_expert, train_public
from tests.flows.conftest import flexo_in_process

WORDS = {
    "public": "the a of and to in is was for on with as by at from that this it be are".split(),
    "math": "sum add plus minus times equals number prime factor divide root square seven nine".split(),
}


def documents(domain: str, count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    words = WORDS[domain]
    return [" ".join(rng.choice(words, size=int(rng.integers(20, 60)))) + "." for _ in range(count)]


def write_world(profile) -> None:
    """Tiny public and math splits plus a BPE tokenizer trained on public train (as the data stage does)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    paths = RunPaths(profile)
    for index, domain in enumerate(("public", "math")):
        for split, count in (("train", 160), ("val", 16)):
            texts = documents(domain, count, seed=index * 10 + len(split))
            frame = pd.DataFrame({"id": [f"{domain}-{split}-{i}" for i in range(count)], "text": texts})
            paths.split(domain, split).parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(paths.split(domain, split))
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>", "<unk>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(pd.read_parquet(paths.split("public", "train"))["text"].tolist(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    fast.save_pretrained(str(paths.tokenizer_dir))


def write_router_rows(profile) -> None:
    """Router rows as the router step writes them (raw 384-d means, projected by the shared map)."""
    paths = RunPaths(profile)
    for seed, domain in enumerate(("public", "math")):
        raw = torch.nn.functional.normalize(
            torch.randn(5, 384, generator=torch.Generator().manual_seed(seed)), dim=-1
        ).mean(0)
        projected = project(raw.numpy(), profile.model.hidden_size, profile.router.projection_seed)
        paths.router_embedding(domain).parent.mkdir(parents=True, exist_ok=True)
        save_file({"raw": raw.contiguous(), "projected": projected.contiguous()}, str(paths.router_embedding(domain)))


def small_budgets(profile):
    """The tiny profile with budgets cut further: 32 public steps, 4 expert steps (tests stay fast on a shared CPU)."""
    public = profile.train_public.model_copy(update={"tokens": 32 * 8 * 32})
    expert = profile.train_expert.model_copy(update={"token_ratio": 4 / 32, "eval_every": 2, "checkpoint_every": 2})
    return profile.model_copy(update={"train_public": public, "train_expert": expert})


@pytest.fixture
def world(tmp_profile):
    profile = small_budgets(tmp_profile)
    write_world(profile)
    write_router_rows(profile)
    return profile


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_profile):
    """One world with M_pub trained once, shared by the tests that need it (read-only use of public/)."""
    root = tmp_path_factory.mktemp("trained")
    paths = tiny_profile.paths.model_copy(update={"data_dir": str(root / "data"), "runs_dir": str(root / "runs")})
    profile = small_budgets(tiny_profile.model_copy(update={"paths": paths}))
    write_world(profile)
    write_router_rows(profile)
    return profile, train_public(profile)


def test_public_expert_and_dense_runs_write_their_artifacts(trained) -> None:
    world, public = trained
    paths = RunPaths(world)
    weights = paths.public_model_dir / "model.safetensors"
    assert public.sha256 == sha256_file(weights)
    steps = world.train_public.tokens // (world.train_public.batch_size * world.train_public.seq_len)
    assert public.metrics["steps"] == steps
    assert public.metrics["val_loss"] < math.log(world.model.vocab_size) - 0.5  # it learned the public word list
    recorded = json.loads((paths.public_dir / "train_result.json").read_text())
    assert recorded["sha256"] == public.sha256
    assert 0 < recorded["metrics"]["peak_rss_gib"] == public.metrics["peak_rss_gib"]  # this run's own peak (MLflow too)

    again = train_public(world)  # a finished run resumes at its end: same weights, no retraining
    assert again.resumed_from == steps and again.sha256 == public.sha256

    expert = train_expert(world, "math")
    tensors, meta = load_expert(expert.expert_file, expected_sha256=expert.sha256)
    assert meta["domain"] == "math" and meta["public_sha256"] == public.sha256
    assert f"layers.{world.model.num_layers - 1}.router" in tensors
    assert float(tensors["layers.0.bias"]) < 0
    assert expert.metrics["steps"] == world.expert_tokens() // (
        world.train_expert.batch_size * world.train_expert.seq_len
    )
    assert expert.dp_epsilon is None
    card = json.loads((paths.expert_dir("math") / "expert_card.json").read_text())
    assert card["owner"] == world.domains["math"].owner and card["sha256"] == expert.sha256

    dense = train_dense(world, "math")
    assert dense.sha256 == sha256_file(paths.dense_dir("math") / "model" / "model.safetensors")
    assert dense.sha256 != public.sha256
    assert (paths.expert_dir("math") / "ckpt").is_dir() and (paths.dense_dir("math") / "ckpt").is_dir()  # kept


def test_without_keep_checkpoints_a_finished_run_leaves_its_exported_model_and_no_ckpt(world) -> None:
    """`train_expert.keep_checkpoints: false` (the anchor profiles): ckpt/ goes once the model is exported (the
    default keeps it: test_public_expert_and_dense_runs_write_their_artifacts)."""
    cfg = world.train_expert.model_copy(update={"keep_checkpoints": False})
    lean = world.model_copy(update={"train_expert": cfg})
    paths = RunPaths(lean)
    train_public(lean)
    expert = train_expert(lean, "math")
    dense = train_dense(lean, "math")
    assert not (paths.expert_dir("math") / "ckpt").exists() and not (paths.dense_dir("math") / "ckpt").exists()
    load_expert(expert.expert_file, expected_sha256=expert.sha256)  # the export is whole
    assert dense.sha256 == sha256_file(paths.dense_dir("math") / "model" / "model.safetensors")
    assert (paths.public_dir / "ckpt").is_dir()  # M_pub's own is not the expert section's to drop


def test_dp_expert_reports_epsilon(trained) -> None:
    world, _ = trained
    expert = train_expert(world, "math", dp=True, resume=False)  # the other test may have left a non-DP checkpoint
    target = world.train_expert.dp.target_epsilon
    assert expert.dp_epsilon is not None and 0 < expert.dp_epsilon <= target * 1.05
    _, meta = load_expert(expert.expert_file, expected_sha256=expert.sha256)
    assert float(meta["dp_epsilon"]) == pytest.approx(expert.dp_epsilon, rel=1e-5)


def test_a_budget_over_max_epochs_is_refused_before_any_compute(world) -> None:
    """No training makes more than `max_epochs` passes over its train split: a budget over it is a ConfigError naming
    the profile, the training, the budget, the data's tokens, the passes and the key to change, before any compute."""
    cfg = world.train_expert
    sequences = tokenize(load_tokenizer(world), read_texts(world, "math", "train"), cfg.seq_len).num_sequences
    passes = world.expert_tokens() / (sequences * cfg.seq_len)
    tight = world.model_copy(update={"train_expert": cfg.model_copy(update={"max_epochs": passes * 0.9})})
    for run in (train_expert, train_dense):
        with pytest.raises(ConfigError, match=r"profile 'tiny': expert and dense model math .* passes.*max_epochs"):
            run(tight, "math")
    assert not RunPaths(world).expert_dir("math").exists() and not RunPaths(world).dense_dir("math").exists()
    public = world.train_public
    tight = world.model_copy(update={"train_public": public.model_copy(update={"max_epochs": 0.01})})
    with pytest.raises(ConfigError, match=rf"M_pub would train {public.tokens:,} tokens .*train_public.max_epochs"):
        train_public(tight)
    assert not RunPaths(world).public_dir.exists()


def test_expert_run_result_records_the_exported_step_and_the_router_diagnostics(trained) -> None:
    """train_result.json holds every validation's per-layer router mass on FFN_i, bias and FFN_i update norm, and
    which step's weights were exported and why."""
    world, _ = trained
    expert = train_expert(world, "math", resume=False)
    recorded = json.loads((RunPaths(world).expert_dir("math") / "train_result.json").read_text())
    steps = int(expert.metrics["steps"])
    assert [int(h["step"]) for h in recorded["history"]] == list(range(2, steps + 1, 2))
    for entry in recorded["history"]:
        for layer in range(world.model.num_layers):
            assert 0 < entry[f"val_router_mass_l{layer}"] < 1
            assert entry[f"val_bias_l{layer}"] < 0
            assert entry[f"val_ffn_update_l{layer}"] > 0  # FFN_i moved away from its copy of FFN_pub
    best = min(recorded["history"], key=lambda h: h["val_loss"])
    assert recorded["exported_step"] == expert.exported_step == int(best["step"]) == expert.metrics["exported_step"]
    assert recorded["export_reason"] and recorded["export_reason"] == expert.export_reason


def test_missing_split_fails_before_any_compute(world) -> None:
    paths = RunPaths(world)
    paths.split("public", "val").unlink()
    with pytest.raises(DataError, match=r"public/val\.parquet.*missing"):
        train_public(world)
    assert not paths.public_dir.exists()
    with pytest.raises(DataError, match="M_pub is missing"):
        train_expert(world, "math")
    with pytest.raises(ConfigError, match="not a data owner"):
        train_expert(world, "public")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has the CUDA device the profile asks for")
def test_a_cuda_profile_on_a_machine_without_cuda_fails_before_any_compute(world) -> None:
    gpu = world.model_copy(update={"runtime": world.runtime.model_copy(update={"device": "cuda"})})
    paths = RunPaths(gpu)
    # what the runs would otherwise read or compute first: a missing split (DataError) and the router row (the encoder)
    paths.split("public", "train").unlink()
    paths.router_embedding("math").unlink()
    for run in (lambda: train_public(gpu), lambda: train_expert(gpu, "math"), lambda: train_dense(gpu, "math")):
        with pytest.raises(ConfigError, match="no CUDA device"):
            run()
    assert not paths.public_dir.exists() and not paths.expert_dir("math").exists()
    assert not paths.router_embedding("math").exists()


def test_budget_below_one_batch_fails_before_any_compute(world) -> None:
    small = world.model_copy(update={"train_public": world.train_public.model_copy(update={"tokens": 100})})
    with pytest.raises(ConfigError, match="below one batch"):
        train_public(small)
    assert not RunPaths(small).public_dir.exists()


def _params_with(tmp_path: Path, section: str, key: str, value) -> Path:
    """A params file whose defaults are the resolved tiny profile, with one bad value."""
    resolved = load_profile("tiny").model_dump(mode="json")
    defaults = {k: v for k, v in resolved.items() if k not in ("name", "seed", "domains")}
    defaults[section][key] = value
    path = tmp_path / f"{section}-{key}.yaml"
    path.write_text(
        yaml.safe_dump(
            {"seed": 1, "domains": resolved["domains"], "defaults": defaults, "profiles": {"tiny": {}}}, sort_keys=False
        )
    )
    return path


def test_bad_values_in_params_yaml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train_public.tokens.*below one batch"):
        load_profile("tiny", _params_with(tmp_path, "train_public", "tokens", 10))
    with pytest.raises(ConfigError, match="divisible by num_heads"):
        load_profile("tiny", _params_with(tmp_path, "model", "num_heads", 5))


def test_cli_exit_code_names_the_missing_split(tmp_path: Path, monkeypatch, capsys) -> None:
    params = _params_with(tmp_path, "paths", "data_dir", str(tmp_path / "data"))
    env = {**os.environ, "FLEXO_PARAMS": str(params)}
    monkeypatch.chdir(REPO_ROOT)
    # the CLI's entry point in this process: the error and its exit code are the same code as in a new one
    done = flexo_in_process(monkeypatch, capsys, env, "train-public", "--profile", "tiny")
    assert done.returncode == DataError.exit_code, done.stderr
    assert "tokenizer" in done.stderr or "public/train.parquet" in done.stderr


def test_precision_auto_resolves_per_device_before_it_reaches_the_run() -> None:
    """`runtime.precision: auto` (the demo default) becomes fp32 or bf16 in the TrainSpec, so the run's fingerprint says
    what ran; the tiny profile pins fp32 so test numbers do not depend on the CPU."""
    from model.precision import resolve_precision
    from tasks.core.build import train_spec

    demo, tiny = load_profile("demo"), load_profile("tiny")
    assert demo.runtime.precision == "auto" and tiny.runtime.precision == "fp32"
    spec = train_spec(demo, demo.train_expert, steps=4, device="cpu")
    assert spec.precision == resolve_precision("auto", "cpu") != "auto"
    assert train_spec(tiny, tiny.train_expert, 4, "cpu").precision == "fp32"
