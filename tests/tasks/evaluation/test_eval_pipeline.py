"""`evaluate` end to end on a tiny world: every model is scored, the report and figures exist, and the numbers obey the
identities they must (routing shares sum to k, opt-out of an expert changes its domain, BTX/soups are real models)."""

from __future__ import annotations

import json

import pytest
import torch

from tasks.core.artifacts import RunPaths
from tasks.core.errors import ConfigError, DataError
from tasks.evaluation.evaluate import evaluate
from tasks.evaluation.results import (
    BTX,
    FLEX,
    FLEX_RT,
    NO_COORD,
    PROMPT,
    PUBLIC,
    SOUP_UNIFORM,
    SOUP_WEIGHTED,
    UNRESTRICTED,
)
from tasks.training import ablations
from tests.profiles import paths_under
from tests.tasks.eval_world import build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_profile):
    root = tmp_path_factory.mktemp("evalworld")
    paths = tiny_profile.paths.model_copy(update=paths_under(root))
    runtime = tiny_profile.runtime.model_copy(update={"num_threads": 1})  # tiny matrices: 1 thread avoids sync overhead
    extra = {"ablation: assembled again": "moe", "ablation: absent": "ablations/none/moe"}
    ablation = tiny_profile.ablation.model_copy(
        update={"variants": list(ablations.LABELS), "domains": ["math", "code"]}
    )
    profile = tiny_profile.model_copy(
        update={
            "paths": paths,
            "runtime": runtime,
            "ablation": ablation,
            "eval": tiny_profile.eval.model_copy(update={"extra_moes": extra}),
        }
    )
    build_world(profile)
    ablations.run_ablations(profile)
    return profile, evaluate(profile, progress=False)


def test_report_has_every_model_and_figure(world):
    profile, result = world
    assert result.report == RunPaths(profile).reports_dir / "flexmix-tiny.md"
    text = result.report.read_text()
    data = json.loads(result.results_json.read_text())
    expected = [PUBLIC, SOUP_UNIFORM, SOUP_WEIGHTED, "BTM (top-2)", PROMPT, BTX, FLEX, FLEX_RT, UNRESTRICTED, NO_COORD]
    expected += [f"dense {d}" for d in profile.closed_domains]
    expected.append("ablation: assembled again")
    expected += [ablations.row_name(v) for v in ablations.LABELS] + [ablations.reference_name(profile)]
    assert sorted(data["per_task"]) == sorted(expected)
    assert list(result.skipped) == ["ablation: absent"]
    assert data["per_task"]["ablation: assembled again"] == data["per_task"][FLEX]  # the same MoE scores the same
    for name in expected:
        assert f"| {name} |" in text
    for figure in ("routing", "k_sweep", "opt_out"):
        assert result.figures[figure].exists() and result.figures[figure].stat().st_size > 1000
    assert all(p.exists() for p in result.tables.values())
    assert (RunPaths(profile).eval_dir / "tasks" / "math_em.yaml").exists()


def test_scores_are_in_range_with_errors(world):
    _, result = world
    data = json.loads(result.results_json.read_text())
    for model, row in data["per_task"].items():
        for task, score in row.items():
            if task.endswith("_bpb"):
                assert 0 < score["value"] < 20, (model, task)
            else:
                assert 0 <= score["value"] <= 1, (model, task)
            assert score["se"] >= 0
    # an untrained tiny model is near chance on 4-way multiple choice, not at 0 or 1 everywhere
    mc = [s["value"] for t, s in data["per_task"][PUBLIC].items() if t.endswith("_mc")]
    assert 0.05 < sum(mc) / len(mc) < 0.6


def test_routing_and_k_sweep(world):
    profile, result = world
    data = json.loads(result.results_json.read_text())
    k = data["top_k"]
    for layer in data["routing_by_domain"]:
        for per_domain in layer:
            assert sum(per_domain) == pytest.approx(k, abs=1e-6)  # each token selects exactly k experts
    assert sorted(int(x) for x in data["k_sweep"]) == list(range(1, len(data["experts"]) + 1))
    assert sorted(data["opt_out"]) == sorted(data["experts"][1:])


def test_missing_inputs_are_named(tmp_profile):
    with pytest.raises(DataError, match="tokenizer"):
        evaluate(tmp_profile, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_config_error_before_any_input_is_read(tmp_profile):
    """`runtime.device: cuda` on a machine without CUDA is refused like training refuses it, never run on the CPU: a
    ConfigError, raised before the tokenizer (missing here, which would be a DataError) or any model is loaded."""
    cuda = tmp_profile.model_copy(update={"runtime": tmp_profile.runtime.model_copy(update={"device": "cuda"})})
    with pytest.raises(ConfigError, match="runtime.device is 'cuda'"):
        evaluate(cuda, progress=False)
    assert not RunPaths(cuda).eval_dir.exists()


def test_flexo_eval_logs_to_mlflow(world, monkeypatch):
    """`flexo eval` on the same world: the report is rewritten and metrics + figures land in a real SQLite MLflow
    store."""
    from typer.testing import CliRunner

    import flows.commands.eval as eval_command
    import mlflow
    from flows.commands import app
    from tasks.core.tracking import TAG_STAGE, setup

    profile, _ = world
    small = {
        "btx_router_steps": 0,
        "rt_steps": 0,
        "unrestricted_steps": 0,
        "task_items": 4,
        "bpb_docs": 2,
        "sweep_docs": 2,
    }
    profile = profile.model_copy(
        update={"eval": profile.eval.model_copy(update=small)}
    )  # fewer items: this tests the wiring
    monkeypatch.setattr(eval_command, "load", lambda name: profile)
    outcome = CliRunner().invoke(app, ["eval", "--profile", "tiny"])
    assert outcome.exit_code == 0, outcome.output
    setup(profile)
    runs = mlflow.search_runs(filter_string=f"tags.{TAG_STAGE} = 'evaluate'", output_format="list")
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert "bpb/FlexOlmo_no_RT/average" in metrics and "acc/M_pub/average" in metrics
    assert runs[0].data.tags["skipped.FlexOlmo_RT_public"] == "eval.rt_steps is 0"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id, "plots")}
    assert {"plots/routing.png", "plots/k_sweep.png", "plots/opt_out.png"} <= artifacts


def test_requests_fit_the_window_and_count_scored_bytes(world):
    """Every request fits max_seq_len; bits per byte divides by the bytes of exactly the scored (possibly cut)
    target."""
    from tasks.core.tokenizer import load_tokenizer
    from tasks.evaluation.inputs import load_test_frames, tokenize_tasks
    from tasks.evaluation.tasks import build_tasks

    profile, _ = world
    tokenizer = load_tokenizer(profile)
    tasks = build_tasks(load_test_frames(profile), profile.eval, profile.seed)
    max_len = 24  # shorter than most documents: forces cuts
    requests, layout = tokenize_tasks(tasks, tokenizer, max_len)
    assert all(len(r.context) + len(r.target) <= max_len for r in requests)
    cut = 0
    for task, index in zip(tasks, layout.offsets, strict=True):
        for item, row in zip(task.items, index, strict=True):
            for choice, request_id in zip(item.choices, row, strict=True):
                request = requests[request_id]
                scored = tokenizer.decode(list(request.target))
                assert layout.n_bytes[request_id] == len(scored.encode("utf-8"))
                cut += scored != choice
    assert cut > 0


def test_router_ablations_change_only_what_they_say(world):
    """Each variant's MoE holds public + the ablated owners; no_bias/random drop the bias, random and public-init rows
    are what they claim, and every variant's FFN_pub and shared weights are M_pub's (the merge checks r_pub too)."""
    from safetensors.torch import load_file
    from transformers import FlexOlmoForCausalLM

    from model.public import load_public_model
    from model.router import hidden_state_embedding
    from tasks.training.expert_file import load_expert

    profile, _ = world
    paths = RunPaths(profile)
    public = load_public_model(str(paths.public_model_dir))
    normal_pub = load_file(str(paths.router_embedding("public")))["projected"]
    for variant in ablations.LABELS:
        root = paths.ablation_dir(variant)
        state, meta = load_expert(root / "experts" / "math" / "expert.safetensors")
        assert meta["ablation"] == variant
        biased = bool((state["layers.0.bias"] < 0).all())  # b_i = 0 when trained without one
        assert biased == (variant == "public_router"), (variant, state["layers.0.bias"])
        r_pub = state["layers.0.router_public"]
        if variant == "no_bias":
            assert torch.equal(r_pub, normal_pub.float())
        else:
            assert not torch.allclose(r_pub, normal_pub.float())
        moe = FlexOlmoForCausalLM.from_pretrained(str(root / "moe"), use_safetensors=True, local_files_only=True)
        assert moe.config.num_experts == 3
        assert torch.equal(moe.model.layers[0].mlp.gate.weight[0], r_pub)
        assert torch.equal(moe.model.embed_tokens.weight, public.model.embed_tokens.weight)
    random_pub = load_file(str(paths.ablation_dir("random_router") / "router" / "public.safetensors"))["row"]
    assert torch.allclose(random_pub.std(), torch.tensor(profile.model.init_std), rtol=0.5)
    batches = ablations._document_batches(profile, "code")
    assert torch.allclose(
        hidden_state_embedding(public, batches),
        load_file(str(paths.ablation_dir("public_router") / "router" / "code.safetensors"))["row"],
    )


def test_router_ablations_are_reported_against_the_same_experts(world):
    profile, result = world
    text = result.report.read_text()
    assert "## Router ablations (paper Tables 1 and 3)" in text
    reference = ablations.reference_name(profile)
    assert reference == "FlexOlmo (no RT), public+math+code"
    for variant in ablations.LABELS:
        assert f"| {ablations.row_name(variant)} |" in text
    data = json.loads(result.results_json.read_text())
    assert data["ablations"] == {ablations.row_name(v): reference for v in ablations.LABELS}
    assert data["per_task"][reference] != data["per_task"][FLEX]  # 3 of 8 experts: a different model
