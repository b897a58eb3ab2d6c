"""`evaluate` end to end on a tiny world: every model is scored, the report and figures exist, and the numbers obey the
identities they must (routing shares sum to k, opt-out of an expert changes its domain, BTX/soups are real models)."""

from __future__ import annotations

import json
import math
import shutil
import sys

import pandas as pd
import pytest
import torch
import yaml

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
from tasks.evaluation.targets import FAILS, HOLDS, NOISE
from tasks.training import ablations
from tests.benchmarks.conftest import load_benchmark
from tests.flows.conftest import tmp_params
from tests.profiles import paths_under
from tests.tasks.eval_world import build_world

AS_EVALUATED = "results-as-evaluated.json"  # the world's results.json as its own evaluation wrote it


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
    result = evaluate(profile, progress=False)
    shutil.copy(result.results_json, root / AS_EVALUATED)  # a later test's `flexo eval` rewrites it with fewer families
    return profile, result


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
    assert data["extras"][FLEX_RT]["proxy_sets"] == len(profile.closed_domains)  # RT read every owner's proxy set
    shares = [data["extras"][FLEX_RT][f"proxy_in_domain_{d}"] for d in profile.closed_domains]
    assert all(0.0 <= share <= 1.0 for share in shares)  # and says how in-domain each set is
    assert data["extras"][UNRESTRICTED]["compute_vs_experts"] > 0  # the upper bound's budget against the experts'
    for name in expected:
        assert f"| {name} |" in text
    for figure in ("routing", "k_sweep", "opt_out", "quality_vs_cost"):
        assert result.figures[figure].exists() and result.figures[figure].stat().st_size > 1000
    assert all(p.exists() for p in result.tables.values())
    assert (RunPaths(profile).eval_dir / "tasks" / "math_em.yaml").exists()


def test_the_report_states_the_science_targets(world):
    """The Targets section sits before the task list, one row per target, and results.json carries the same list
    (before `test_flexo_eval_logs_to_mlflow` rewrites both with fewer families)."""
    _, result = world
    text = result.report.read_text()
    assert text.index("## Targets") < text.index("## Tasks") < text.index("### Downstream tasks")
    targets = json.loads(result.results_json.read_text())["targets"]
    assert [t["key"] for t in targets] == [
        "epochs",
        "export",
        "gain_share",
        "forgetting",
        "opt_out",
        "mixed",
        "ordering",
    ]
    assert result.targets == {t["key"]: t["verdict"] for t in targets}
    section = text.split("## Targets")[1].split("## Tasks")[0]
    assert all(f"| {t['target']} | {t['measured']} |" in section for t in targets)
    # every science target the tiny world can measure gets a verdict (it runs each family: RT, mixed docs, opt-out)
    for key in ("gain_share", "forgetting", "opt_out", "mixed", "ordering"):
        assert result.targets[key] in (HOLDS, NOISE, FAILS), (key, result.targets[key])
    assert FLEX_RT in next(t["target"] for t in targets if t["key"] == "mixed")  # the served row: router-tuned
    # the gaps' SEs come from the shared bootstrap draws: smaller than the unpaired sum of the two SEs
    data = json.loads(result.results_json.read_text())
    bpb, paired = data["bpb"], data["paired_se"]["bpb"]
    unpaired = math.hypot(bpb[FLEX]["average"]["se"], bpb[PUBLIC]["average"]["se"])
    assert 0 < paired[PUBLIC][FLEX]["average"] < unpaired
    assert set(paired) == {PUBLIC, "BTM (top-2)", FLEX, FLEX_RT} and "(paired: results.json's `paired_se`)" in section


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
    for key in ("router_mass_by_domain", "router_mass_by_domain_rt"):  # served, and after router tuning
        for layer in data[key]:
            for per_domain in layer:
                assert sum(per_domain) == pytest.approx(1.0, abs=1e-4)  # a softmax over all experts
                assert max(per_domain) < 1.0 and min(per_domain) > 0.0
    assert data["router_mass_by_domain_rt"] != data["router_mass_by_domain"]  # the tuned router's own, not a copy
    report = result.report.read_text()
    header = "| domain | its own expert | public FFN | strongest other expert | after RT: its own expert |"
    assert header in report
    assert sorted(int(x) for x in data["k_sweep"]) == list(range(1, len(data["experts"]) + 1))
    assert sorted(data["opt_out"]) == sorted(data["experts"][1:])


def test_mixed_documents_are_test_text_scored_by_every_model(world):
    """Every model has a mixed-document row (whole, before and after the switch), none of it leaks into the FLEXMIX
    tables, and every segment is its recorded test document's text."""
    profile, result = world
    data = json.loads(result.results_json.read_text())
    assert sorted(data["mixed"]) == sorted(data["per_task"])
    assert all("mixed_bpb" not in row for row in data["per_task"].values())
    for model, row in data["mixed"].items():
        assert sorted(row) == ["after switch", "before switch", "document"], model
        assert all(0 < score["value"] < 20 and score["se"] > 0 for score in row.values()), (model, row)
    assert data["mixed"][FLEX] != data["mixed"]["BTM (top-2)"] != data["mixed"][PUBLIC]
    docs = data["mixed_docs"]
    assert len(docs) == profile.eval.mixed_docs
    paths = RunPaths(profile)
    for doc in docs:
        assert len({s["domain"] for s in doc["segments"]}) == profile.eval.mixed_domains_per_doc
        for segment in doc["segments"]:
            test = pd.read_parquet(paths.split(segment["domain"], "test")).set_index("id")["text"]
            assert segment["source_id"] in test.index  # the world's ids name their split: <domain>-test-<i>
            assert test[segment["source_id"]][segment["source_start"] : segment["source_end"]]
    routing = data["mixed_routing"]  # every tiny-world domain has an expert: every document counts
    assert sorted(routing) == sorted(
        f"{which} paragraph's expert, {side} the switch"
        for which in ("first", "second")
        for side in ("before", "after")
    )
    assert all(0 <= r["value"] <= 1 and r["se"] >= 0 for r in routing.values()), routing
    text = result.report.read_text()
    assert "## Mixed-domain documents" in text and "Routing across the switch" in text
    section = text.split("## Mixed-domain documents")[1].split("\n## ")[0]
    for name in data["mixed"]:
        assert f"| {name} |" in section


def test_before_the_switch_is_the_whole_documents_first_tokens(world):
    """The before-the-switch request is the whole document's request cut at the switch, so a causal model scores
    those tokens the same in both: M_pub's per-token log-probabilities of the whole request, summed over them, are
    the shorter request's log-likelihood."""
    from model.public import load_public_model
    from model.scoring import make_batch, model_scorer, score_requests
    from tasks.core.tokenizer import load_tokenizer
    from tasks.evaluation.inputs import append_mixed, load_test_frames
    from tasks.evaluation.metrics import Layout
    from tasks.evaluation.mixed import build_mixed

    profile, result = world
    tokenizer = load_tokenizer(profile)
    docs = build_mixed(load_test_frames(profile), profile.eval, profile.seed)
    assert [d.doc_id for d in docs] == [d["id"] for d in json.loads(result.results_json.read_text())["mixed_docs"]]
    empty = Layout([], pd.Series([], dtype="int64").to_numpy())
    task, requests, layout = append_mixed([], empty, docs, tokenizer, profile.model.max_seq_len)
    index = layout.offsets[0]
    assert index.shape == (len(docs), 2) and len(task.items) == len(docs)
    public = load_public_model(str(RunPaths(profile).public_model_dir)).eval()
    scores = score_requests(requests, model_scorer(public, "p"), 4, tokenizer.pad_token_id)["p"]
    after_bytes = []
    for whole_id, before_id in index:
        whole, before = requests[whole_id], requests[before_id]
        assert whole.context == before.context and whole.target[: len(before.target)] == before.target
        assert 0 < layout.n_bytes[before_id] <= layout.n_bytes[whole_id]
        after_bytes.append(layout.n_bytes[whole_id] - layout.n_bytes[before_id])
        batch = make_batch([whole], tokenizer.pad_token_id)
        with torch.no_grad():
            logprobs = torch.log_softmax(public(input_ids=batch.input_ids).logits.float(), dim=-1)[0]
        positions = range(len(whole.context) - 1, len(whole.context) - 1 + len(before.target))
        first = sum(float(logprobs[p, t]) for p, t in zip(positions, before.target, strict=True))
        assert scores.loglik[before_id] == pytest.approx(first, abs=1e-4)
    assert sum(b > 0 for b in after_bytes) > len(docs) // 2  # most documents are still scored after their switch


def test_every_model_has_its_cost_and_tasks_their_chance_margin(world):
    """FLOPs per token from the configs: dense models alike, BTM its top-2 members, soups one model, the MoEs more
    than a dense model (k experts) but less than BTM (shared attention and head); every task row states M_pub's
    margin over chance."""
    profile, result = world
    data = json.loads(result.results_json.read_text())
    cost = data["cost"]["models"]
    assert sorted(cost) == sorted(data["per_task"])
    one = cost[PUBLIC]["flops_per_token"]
    assert all(cost[f"dense {d}"]["flops_per_token"] == one for d in profile.closed_domains)
    assert cost[SOUP_UNIFORM]["flops_per_token"] == cost[SOUP_WEIGHTED]["flops_per_token"] == one
    assert cost["BTM (top-2)"]["flops_per_token"] == 2 * one
    members = 1 + len(profile.closed_domains)
    for name in ("BTM (top-2)", SOUP_WEIGHTED):
        assert cost[name]["routing_flops_per_prefix_token"] == members * one
    assert cost[PROMPT]["routing_flops_per_prefix_token"] > 0
    for name in (FLEX, FLEX_RT, BTX, UNRESTRICTED, NO_COORD):
        assert one < cost[name]["flops_per_token"] < 2 * one, name
    text = result.report.read_text()
    assert "## Quality against inference cost" in text and "quality_vs_cost.png" in text
    tasks_table = text.split("## Tasks")[1].split("\n\n")[1]
    rows = [line for line in tasks_table.splitlines() if line.startswith("| ") and not line.startswith("| task")]
    assert len(rows) == len(data["tasks"])
    assert all(" (yes) |" in row or " (no) |" in row for row in rows)


def _run_without_the_encoder(profile, monkeypatch):
    """An EvalRun over the world where sentence-transformers cannot be imported (None in sys.modules makes `import`
    raise ImportError), as on a GPU worker without the encoder's wheel."""
    from tasks.core.tokenizer import load_tokenizer
    from tasks.evaluation.inputs import load_models, load_test_frames, tokenize_tasks
    from tasks.evaluation.runner import EvalRun, Runner
    from tasks.evaluation.tasks import build_tasks

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    tokenizer = load_tokenizer(profile)
    tasks = build_tasks(load_test_frames(profile), profile.eval, profile.seed)
    requests, layout = tokenize_tasks(tasks, tokenizer, profile.model.max_seq_len)
    device = torch.device("cpu")
    runner = Runner(profile, device, tokenizer.pad_token_id, None, "fp32")
    return EvalRun(profile, device, tokenizer, tasks, requests, layout, load_models(profile, device), runner)


def test_prompt_routing_is_skipped_without_its_encoder(world, monkeypatch):
    """Without its encoder, prompt routing records why it is not evaluated instead of failing the evaluation."""
    from tasks.evaluation.families import score_prompt_routing

    run = _run_without_the_encoder(world[0], monkeypatch)
    score_prompt_routing(run)
    assert PROMPT not in run.results and PROMPT not in run.costs
    assert "sentence_transformers" in run.skipped[PROMPT] and "cannot be imported" in run.skipped[PROMPT]


def test_router_tuning_without_the_encoder_runs_on_public_text(world, monkeypatch, caplog):
    """Without the encoder, router tuning still runs, on public text alone, and says so: no proxy sets, a warning
    naming why."""
    from tasks.evaluation.families import _rt_proxies

    run = _run_without_the_encoder(world[0], monkeypatch)
    with caplog.at_level("WARNING"):
        assert _rt_proxies(run) is None
    assert "public text alone" in caplog.text and "sentence_transformers" in caplog.text


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
    assert runs[0].data.tags["target.epochs"] == "not measured"  # the world's models come without train_result.json
    assert runs[0].data.tags["target.opt_out"] in (HOLDS, NOISE, FAILS)
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


def test_the_unrestricted_budget_benchmark_reproduces_the_reports_row(world, tmp_path, monkeypatch, capsys):
    """benchmarks/unrestricted_budget.py at the profile's own steps is the evaluation's unrestricted MoE row: the same
    training, requests, batches and bootstrap draws (its other budgets are then comparable with the report's rows)."""
    profile, result = world
    params = tmp_params(tmp_path)  # the world's paths and its one thread (the ablations do not touch this row)
    raw = yaml.safe_load(params.read_text())
    raw["defaults"]["paths"].update(paths_under(profile.path("data_dir").parent))
    raw["profiles"]["tiny"].setdefault("runtime", {})["num_threads"] = profile.runtime.num_threads
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.setenv("FLEXO_PARAMS", str(params))
    out = tmp_path / "unrestricted.json"
    steps = str(profile.eval.unrestricted_steps)
    argv = ["unrestricted_budget.py", "--profile", "tiny", "--steps", steps, "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    load_benchmark("unrestricted_budget").main()
    payload = json.loads(out.read_text())
    ours = payload["rows"][f"{UNRESTRICTED}, {steps} steps"]
    report = json.loads((profile.path("data_dir").parent / AS_EVALUATED).read_text())
    for table in ("bpb", "accuracy"):
        for column, cell in report[table][UNRESTRICTED].items():
            assert ours[table][column] == cell, (table, column)
        public = payload["rows"]["M_pub"][table]["average"]["value"]  # a row of the results.json the script read
        assert payload["minus"]["M_pub"][table]["value"] == pytest.approx(ours[table]["average"]["value"] - public)
    assert payload["extras"]["steps"] == profile.eval.unrestricted_steps
    assert f"{UNRESTRICTED}, {steps} steps" in capsys.readouterr().out
