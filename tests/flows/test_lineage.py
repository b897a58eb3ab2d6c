"""The lineage a real `pipeline` run leaves in MLflow and Prefect (the tiny profile, one public and one owner domain
built from text folders): one parent run per pipeline run holding every stage and domain run, each run that reads
data names every split it read with its DVC md5 and the owner's remote, every registered version links the run it
came from, the Prefect flow run and the MLflow parent name each other, and a rerun served from Prefect's cache opens
a parent with no empty children. One pipeline run (and its cached rerun) per module: the assertions share it."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from flows.evaluate import benchmark_rows
from flows.pipeline import pipeline
from flows.steps import STEPS, code_fingerprint
from tasks.core import tracking
from tasks.core.config import Profile
from tasks.core.datasets import dataset_hash
from tests.profiles import profile_under
from tests.tasks.data_world import folder_domain, with_domains, write_txt_folder

OWNER = "mine"
PARENT_TAG = "mlflow.parentRunId"
URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
FLOW_MODULES = ("ablate", "assemble", "attack", "data", "evaluate", "expert", "public")


@dataclass
class Lineage:
    profile: Profile
    first: dict[str, Any]
    second: dict[str, Any]
    runs: list[Any]  # every run of the experiment after both pipeline runs


@pytest.fixture(scope="module")
def lineage(tiny_profile, tmp_path_factory, prefect_harness) -> Lineage:
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("lineage")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    write_txt_folder(root / "pub", 200, seed=5)  # M_pub's budget within train_public.max_epochs passes
    write_txt_folder(root / "mine", 40, seed=6)
    (root / "mine" / "short.txt").write_text("too short\n")  # quarantined (length): the data run counts it
    base = profile_under(tiny_profile, root)
    base = base.model_copy(update={"attack": base.attack.model_copy(update={"domain": OWNER})})
    profile = with_domains(
        base,
        {"public": folder_domain(root / "pub", owner="pub"), OWNER: folder_domain(root / "mine", owner="me")},
        near_duplicate_threshold=0.99,
    )
    saved = {name: os.environ.get(name) for name in URI_VARS}
    # the code fingerprints as they are now: a source file edited in the working tree meanwhile must not miss the cache
    fixed = {step: code_fingerprint(step) for step in STEPS}
    patch = pytest.MonkeyPatch()
    for module in FLOW_MODULES:
        patch.setattr(importlib.import_module(f"flows.{module}"), "code_fingerprint", fixed.__getitem__)
    try:
        first = pipeline(profile=profile)
        second = pipeline(profile=profile)
    finally:
        patch.undo()  # the store's URI must not reach later tests' subprocesses
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    client = MlflowClient(tracking.tracking_uri(profile))
    experiment = client.get_experiment_by_name(profile.registry.experiment)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return Lineage(profile, first, second, runs)


def _parents(lineage: Lineage) -> list[Any]:
    return sorted(
        (r for r in lineage.runs if r.data.tags.get(tracking.TAG_STAGE) == "pipeline"), key=lambda r: r.info.start_time
    )


def _under(lineage: Lineage, parent_id: str) -> list[Any]:
    """Every run below `parent_id` (children, grandchildren, ...)."""
    below, frontier = [], {parent_id}
    while frontier:
        found = [r for r in lineage.runs if r.data.tags.get(PARENT_TAG) in frontier]
        below += found
        frontier = {r.info.run_id for r in found}
    return below


def _one(runs: list[Any], stage: str, domain: str | None = None) -> Any:
    found = [
        r
        for r in runs
        if r.data.tags.get(tracking.TAG_STAGE) == stage and r.data.tags.get(tracking.TAG_DOMAIN) == domain
    ]
    assert len(found) == 1, (stage, domain, [(r.info.run_name, r.data.tags.get(tracking.TAG_STAGE)) for r in runs])
    return found[0]


def test_the_pipeline_ran_every_stage(lineage) -> None:
    assert lineage.first["failed"] == [] and lineage.second["failed"] == []
    statuses = {(r["step"], r["domain"]): r["status"] for r in lineage.first["steps"]}
    for step in ("train_public", "train_expert", "register_expert", "assemble", "evaluate", "attack"):
        assert any(s == step and status == "completed" for (s, _), status in statuses.items()), (step, statuses)
    assert {r["status"] for r in lineage.second["steps"] if r["step"] != "record_shared_stages"} <= {
        "cached",
        "completed",
    }
    # r_pub is the public stage's own step, not a one-off inside the first owner's training; the rerun reuses it
    rows = {
        run: [r for r in summary["steps"] if (r["step"], r["domain"]) == ("embed_domain", "public")]
        for run, summary in (("first", lineage.first), ("second", lineage.second))
    }
    assert [(r["stage"], r["status"]) for r in rows["first"]] == [("public", "completed")]
    assert [(r["stage"], r["status"]) for r in rows["second"]] == [("public", "cached")]


def test_one_parent_per_pipeline_run_with_the_profile_and_every_run_below_it(lineage) -> None:
    parents = _parents(lineage)
    assert len(parents) == 2  # one per pipeline run, the cached rerun included
    first = parents[0]
    assert PARENT_TAG not in first.data.tags
    assert first.data.params["model.hidden_size"] == str(lineage.profile.model.hidden_size)
    assert first.data.metrics["steps_failed"] == 0 and first.data.metrics["steps_completed"] > 0
    assert first.data.metrics["stage_seconds.expert"] > 0
    if lineage.profile.registry.system_metrics:
        assert any(key.startswith("system/") for key in first.data.metrics)
    commit = first.data.tags[tracking.TAG_GIT_COMMIT]  # HEAD when the run started (others may commit meanwhile)
    assert len(commit) == 40
    below = _under(lineage, first.info.run_id)
    assert {r.info.run_id for r in below} | {p.info.run_id for p in parents} == {r.info.run_id for r in lineage.runs}
    for stage, domain in (
        ("train_public", None),
        ("train_expert", OWNER),
        ("register", "public"),
        ("register", OWNER),
        ("register", "moe"),
        ("evaluate", None),
        ("attack", OWNER),
    ):
        run = _one(below, stage, domain)
        assert run.data.tags[tracking.TAG_GIT_COMMIT] == commit
    evaluated = _one(below, "evaluate").data
    assert evaluated.params  # the evaluation settings are on the one evaluate run
    assert {"target.gain_share", "target.ordering"} <= set(evaluated.tags)  # each science target's verdict


def test_every_run_that_reads_data_names_each_split_with_its_dvc_md5_and_remote(lineage) -> None:
    profile = lineage.profile
    below = _under(lineage, _parents(lineage)[0].info.run_id)
    expected = {
        ("train_public", None): {("public", "train"), ("public", "val")},
        ("train_expert", OWNER): {(OWNER, "train"), (OWNER, "val")},
        ("attack", OWNER): {(OWNER, "train")},
        ("evaluate", None): {("public", "test"), (OWNER, "test")},
    }
    for (stage, domain), splits in expected.items():
        run = _one(below, stage, domain)
        read = {}
        for dataset_input in run.inputs.dataset_inputs:
            tags = {t.key: t.value for t in dataset_input.tags}
            read[(tags["domain"], tags["split"])] = (dataset_input.dataset, tags)
        assert splits <= read.keys(), (stage, domain, sorted(read))
        for read_domain, split in splits:
            dataset, tags = read[(read_domain, split)]
            md5 = dataset_hash(profile, read_domain)
            assert dataset.source_type == "dvc" and tags["dvc_md5"] == md5 and f"@{md5}" in dataset.source
            owner = profile.domains[read_domain].owner  # no remote configured: the owner's local remote
            assert json.loads(dataset.source)["remote"] == str(profile.path("dvc_remotes_dir") / owner)


def test_each_domain_built_is_a_data_run_with_its_version_counts_validation_and_card(lineage) -> None:
    from mlflow import MlflowClient

    profile = lineage.profile
    below = _under(lineage, _parents(lineage)[0].info.run_id)
    client = MlflowClient(tracking.tracking_uri(profile))
    for domain, owner in (("public", "pub"), (OWNER, "me")):
        run = _one(below, "data", domain)
        tags, metrics = run.data.tags, run.data.metrics
        md5 = dataset_hash(profile, domain)
        assert run.info.status == "FINISHED" and tags["data_md5"] == md5 and md5.endswith(".dir")
        assert tags["dvc.remote"] and tags["dvc.tracked_by"] and tags["validation"] == "passed"
        assert run.data.params["domain.owner"] == owner
        assert metrics["accepted"] == metrics["ingested"] - metrics["quarantined"] > 0
        assert sum(metrics[f"split.{s}"] for s in ("train", "val", "test")) > 0
        built = {}
        for dataset_input in run.inputs.dataset_inputs:
            input_tags = {t.key: t.value for t in dataset_input.tags}
            built[input_tags["split"]] = (dataset_input.dataset, input_tags)
        assert set(built) == {"train", "val", "test"}
        for dataset, input_tags in built.values():
            assert dataset.source_type == "dvc" and f"@{md5}" in dataset.source and input_tags["dvc_md5"] == md5
            assert input_tags["mlflow.data.context"] == "built"
        assert f"# Data card: `{domain}`" in tags["mlflow.note.content"]  # the run's description
        cards = {a.path for a in client.list_artifacts(run.info.run_id, "card")}
        assert cards == {f"card/{domain}.md", f"card/{domain}.json"}
    mine = _one(below, "data", OWNER).data.metrics
    assert mine["ingested"] == 41 and mine["quarantined"] >= 1
    assert any(key.startswith("quarantined.length") for key in mine), sorted(mine)


def test_every_registered_version_links_the_run_it_came_from(lineage) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking.tracking_uri(lineage.profile))
    first = _parents(lineage)[0].info.run_id
    below = {r.info.run_id: r for r in _under(lineage, first)}
    registry = lineage.profile.registry
    for name, trained_by in (
        (registry.public_model, ("train_public", None)),
        (f"{registry.expert_model_prefix}{OWNER}", ("train_expert", OWNER)),
        (registry.moe_model, None),
    ):
        (version,) = client.search_model_versions(f"name = '{name}'")
        assert version.run_id in below, name  # the registration run, inside this pipeline run
        if trained_by:
            assert version.tags["training_run_id"] == _one(list(below.values()), *trained_by).info.run_id


def test_prefect_and_mlflow_name_each_other(lineage) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    parent = _parents(lineage)[0]
    flow_run_id = parent.data.tags[tracking.TAG_PREFECT_FLOW_RUN]
    assert parent.data.tags[tracking.TAG_PREFECT_FLOW_RUN_URL].endswith(flow_run_id)
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        links = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["flexo-mlflow-run"])))
        tables = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["flexo-benchmark"])))
    assert flow_run.name and f"mlflow-run:{parent.info.run_id}" in flow_run.tags
    assert any(a.flow_run_id == flow_run.id and parent.info.run_id in str(a.data) for a in links)
    # the benchmark table, from the keys the real evaluation result has: a row per (table, model), scores in columns
    (evaluated,) = [r for r in lineage.first["steps"] if r["step"] == "evaluate"]
    rows = benchmark_rows(evaluated["result"])
    assert {"bpb", "acc"} <= {r["table"] for r in rows} and all(r["model"] for r in rows)
    assert any(isinstance(r.get("average"), float) for r in rows)
    assert any(json.loads(a.data) == rows for a in tables if isinstance(a.data, str))


def test_a_cached_rerun_opens_no_empty_runs(lineage) -> None:
    second = _parents(lineage)[1]
    below = _under(lineage, second.info.run_id)
    cached_steps = {r["step"] for r in lineage.second["steps"] if r["status"] == "cached"}
    assert {"train_public", "train_expert", "evaluate", "attack"} <= cached_steps
    assert below == []


def test_the_experiment_opens_on_its_runs(lineage) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking.tracking_uri(lineage.profile))
    experiment = client.get_experiment_by_name(lineage.profile.registry.experiment)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    view = experiment.tags[tracking.SHARED_VIEW_TAG_PREFIX + tracking.REVIEWER_VIEW_KEY]  # the reviewer's columns
    assert view == tracking.reviewer_view_state()


def test_version_descriptions_are_their_cards_and_the_audit_trail_is_out_of_the_tags_column(lineage) -> None:
    from mlflow import MlflowClient

    profile = lineage.profile
    client = MlflowClient(tracking.tracking_uri(profile))
    expert_name = f"{profile.registry.expert_model_prefix}{OWNER}"
    card = client.get_model_version(expert_name, "1").description
    md5 = dataset_hash(profile, OWNER)
    for line in ("**Status: active**", "| owner | me |", f"| data version (DVC md5) | `{md5}` |", "| DP epsilon |"):
        assert line in card, (line, card)
    assert "| extraction rate | 0." in card and "| check extraction |" in card  # the attack's verdict, once it ran
    assert "| val_loss |" in card
    moe_card = client.get_model_version(profile.registry.moe_model, "1").description
    assert f"| {OWNER} | {expert_name} | 1 | me |" in moe_card
    for model in client.search_registered_models():
        assert not [key for key in model.tags if key.startswith("audit.")], model.name  # the UI hides mlflow.*
    assert any(key.startswith("mlflow.flexo.audit.") for key in client.get_registered_model(expert_name).tags)
