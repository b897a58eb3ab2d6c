"""A Llama-family anchor downstream of training: the merged `Qwen2MoeForCausalLM` through the whole evaluation (every
family the 2-core anchor profile runs, the k-sweep and the opt-out figures) and through serving (greedy generation with
attribution, an expert opted out). The anchor is a tiny random Llama built here; its dense models are perturbed copies,
its experts their FFNs, assembled by the pipeline's own `assemble`."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaForCausalLM, Qwen2MoeForCausalLM

from model.public import load_moe, load_public_model
from tasks.core.artifacts import RunPaths
from tasks.evaluation.cost import decoder_flops
from tasks.evaluation.evaluate import evaluate
from tasks.evaluation.results import FLEX, PUBLIC, SOUP_UNIFORM, SOUP_WEIGHTED
from tasks.registry.serving import FlexoMoE
from tests.model.gguf_files import tiny_llama
from tests.profiles import paths_under
from tests.tasks.eval_world import build_world


def _anchor() -> LlamaForCausalLM:
    """The tiny profile's sizes as a Llama, with the ids of the world's tokenizer (pad 0, eos 1)."""
    llama = tiny_llama(vocab_size=512, rope_theta=500_000.0, rms_norm_eps=1e-6)
    for config in (llama.config, llama.generation_config):
        config.pad_token_id, config.eos_token_id, config.bos_token_id = 0, 1, 1
    return llama


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_profile):
    """The 2-core anchor profile's evaluation settings (no MoE-training baselines) on a tiny Llama world."""
    root = tmp_path_factory.mktemp("anchorworld")
    no_training = {"btx_router_steps": 0, "rt_steps": 0, "unrestricted_steps": 0}
    profile = tiny_profile.model_copy(
        update={
            "paths": tiny_profile.paths.model_copy(update=paths_under(root)),
            "runtime": tiny_profile.runtime.model_copy(update={"num_threads": 1}),
            "eval": tiny_profile.eval.model_copy(update=no_training),
        }
    )
    build_world(profile, public=_anchor())
    return profile, evaluate(profile, progress=False)


def test_the_llama_world_is_hosted_by_qwen2_moe(world) -> None:
    profile, _ = world
    paths = RunPaths(profile)
    assert isinstance(load_public_model(str(paths.public_model_dir)), LlamaForCausalLM)
    moe = load_moe(str(paths.moe_dir))
    assert isinstance(moe, Qwen2MoeForCausalLM) and moe.config.num_experts == len(profile.domains)
    assert moe.config.norm_topk_prob is False


def test_every_family_scores_every_task_on_a_llama_anchor(world) -> None:
    profile, result = world
    data = json.loads(result.results_json.read_text())
    for name in (PUBLIC, SOUP_UNIFORM, SOUP_WEIGHTED, FLEX, *(f"dense {d}" for d in profile.closed_domains)):
        row = data["per_task"][name]
        assert row, name
        for task, score in row.items():
            bounds = (0.0, 20.0) if task.endswith("_bpb") else (0.0, 1.0)
            assert bounds[0] <= score["value"] <= bounds[1], (name, task, score)
    assert data["per_task"][FLEX] != data["per_task"][PUBLIC]  # the experts change what the MoE computes
    assert data["mixed"][FLEX]["after switch"] != data["mixed"][PUBLIC]["after switch"]
    # FLOPs from a Llama config (grouped KV heads allowed) and a Qwen2-MoE one (`moe_intermediate_size`)
    cost, context = data["cost"]["models"], data["cost"]["mean_context"]
    llama = load_public_model(str(RunPaths(profile).public_model_dir)).config
    assert cost[PUBLIC]["flops_per_token"] == pytest.approx(decoder_flops(llama, context))
    moe = load_moe(str(RunPaths(profile).moe_dir)).config
    expert = 6 * moe.hidden_size * moe.moe_intermediate_size * moe.num_hidden_layers
    assert cost[FLEX]["flops_per_token"] - cost[PUBLIC]["flops_per_token"] == pytest.approx(
        (moe.num_experts_per_tok - 1) * expert + 2 * moe.hidden_size * moe.num_experts * moe.num_hidden_layers
    )
    for figure in ("routing", "k_sweep", "opt_out"):
        assert result.figures[figure].stat().st_size > 1000


def test_serving_a_llama_moe_attributes_and_opts_out_exactly(world) -> None:
    profile, _ = world
    served = FlexoMoE(RunPaths(profile).moe_dir)
    full = served.generate("the city river", max_new_tokens=6)
    assert set(full["attribution"]) == set(served.experts)
    assert sum(full["selected"].values()) == pytest.approx(served.model.config.num_experts_per_tok, abs=1e-5)
    closed = [name for name in served.experts if name != "public"]
    alone = served.generate("the city river", max_new_tokens=6, exclude=closed)  # every closed expert opted out
    assert alone["experts"] == ["public"]
    assert all(alone["attribution"][name] == alone["selected"][name] == 0.0 for name in closed)
    assert alone["attribution"]["public"] == pytest.approx(1.0)
    public = load_public_model(str(RunPaths(profile).public_model_dir))
    encoded = served.tokenizer("the city river", return_tensors="pt")
    with torch.no_grad():
        reference = public.generate(**encoded, max_new_tokens=6, do_sample=False, pad_token_id=0)
    expected = reference[0, encoded["input_ids"].shape[1] :].tolist()
    assert alone["token_ids"] == expected  # the public expert alone is M_pub exactly (its softmax mass is 1)
