"""The `data` flow under Prefect's harness: every domain built, checked, versioned and carded as cached tasks; an
unchanged rerun (right after a fresh build) is all cache hits."""

from __future__ import annotations

import json

import pytest

from flows.data import data
from tasks.core.artifacts import RunPaths
from tests.tasks.data_world import folder_domain, with_domains, write_txt_folder

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_data_flow_builds_versions_and_cards_each_domain_then_reuses_all(world, tmp_path) -> None:
    pub, mine = tmp_path / "pub", tmp_path / "mine"
    write_txt_folder(pub, 80, seed=5)
    write_txt_folder(mine, 40, seed=6)
    base = world.model_copy(update={"attack": world.attack.model_copy(update={"domain": "mine"})})
    p = with_domains(
        base,
        {"public": folder_domain(pub, owner="pub"), "mine": folder_domain(mine, owner="me")},
        near_duplicate_threshold=0.99,
    )
    first = data(profile=p, fail_on_error=False)
    statuses = {(r["step"], r["domain"]): r["status"] for r in first}
    assert set(statuses.values()) == {"completed"}, first
    assert {
        ("version_domain", "mine"),
        ("write_card", "public"),
        ("write_card", "mine"),
        ("check_benchmark", None),
    } <= statuses.keys()
    card = json.loads((RunPaths(p).data_reports_dir / "cards" / "mine.json").read_text())
    assert card["owner"] == "me" and card["dvc_md5"].endswith(".dir") and card["tokens"]["train"] > 0

    assert first[-1]["step"] == "record_shared_stages" and first[-1]["result"]["value"] == []  # no dvc.yaml here

    second = data(profile=p, fail_on_error=False)
    reused = {r["status"] for r in second if r["step"] != "record_shared_stages"}  # a dvc commit, never cached
    assert reused == {"cached"}, [(r["step"], r["domain"], r["status"]) for r in second]


def _split_ids(p) -> dict[tuple[str, str], set[str]]:
    from tasks.core.datasets import load_split

    return {(d, s): set(load_split(p, d, s)["id"]) for d in p.domains for s in ("train", "val", "test")}


def test_splits_do_not_depend_on_the_order_domains_are_built_in(world, tmp_path) -> None:
    """Each domain's first eval candidate shares a 13-gram run with the other domain. Splitting a domain before the
    other is fingerprinted would keep that candidate, and the later cross-domain check would move it to train without
    a refill: the counts (and data hashes) would then depend on which domain came first."""
    import random
    import shutil

    from tasks.data.split import hash_order
    from tests.tasks.data_world import prose

    folders = {"public": tmp_path / "pub", "mine": tmp_path / "mine"}
    texts = {
        "public": write_txt_folder(folders["public"], 80, seed=5),
        "mine": write_txt_folder(folders["mine"], 60, seed=6),
    }
    shared = prose(random.Random(77), 20)
    first_candidate = {}
    for d, folder in folders.items():
        ids = [f"{d}/doc{i:03d}.txt#0" for i in range(len(texts[d]))]
        first = hash_order(ids, world.seed)[0]
        (folder / f"doc{first:03d}.txt").write_text(texts[d][first] + " " + shared + "\n", encoding="utf-8")
        first_candidate[d] = ids[first]
    base = world.model_copy(update={"attack": world.attack.model_copy(update={"domain": "mine"})})
    p = with_domains(
        base, {d: folder_domain(f, owner=f"{d}-owner") for d, f in folders.items()}, near_duplicate_threshold=0.99
    )

    runs = []
    for order in (["public", "mine"], ["mine", "public"]):
        for rel in ("data", "runs", "reports"):
            shutil.rmtree(tmp_path / rel, ignore_errors=True)
        outcome = data(profile=p, domains=order, fail_on_error=False)
        assert {r["status"] for r in outcome if r["step"] != "record_shared_stages"} <= {"completed", "cached"}, outcome
        runs.append(_split_ids(p))
        disjoint = json.loads((RunPaths(p).data_reports_dir / "disjoint.json").read_text())
        assert disjoint["contaminated_eval"] == 0  # the split already avoided both shared-run candidates
    assert runs[0] == runs[1]
    for d, doc in first_candidate.items():
        assert doc in runs[0][(d, "train")]
        assert len(runs[0][(d, "test")]) == min(p.data.test_docs, int(len(texts[d]) * p.data.max_eval_fraction))


def test_a_test_split_too_small_for_the_benchmark_fails_at_the_data_stage(world, tmp_path) -> None:
    """Found before any training, named in the data stage, and the pipeline's evaluation is skipped with the reason."""
    from flows.pipeline import pipeline

    pub, mine = tmp_path / "pub", tmp_path / "mine"
    write_txt_folder(pub, 80, seed=5)
    write_txt_folder(mine, 40, seed=6)
    base = world.model_copy(
        update={
            "attack": world.attack.model_copy(update={"domain": "mine"}),
            "eval": world.eval.model_copy(update={"choices": 12}),
        }
    )  # more than a test split holds
    p = with_domains(
        base,
        {"public": folder_domain(pub, owner="pub"), "mine": folder_domain(mine, owner="me")},
        near_duplicate_threshold=0.99,
    )
    summary = pipeline(profile=p, domains=["mine"], stages=["data", "evaluate"])
    check = [r for r in summary["steps"] if r["step"] == "check_benchmark"]
    assert len(check) == 1 and check[0]["status"] == "failed", summary["steps"]
    assert (
        "needs 12 distinct choices" in check[0]["detail"]
        and f"{RunPaths(p).split('mine', 'test')}:" in check[0]["detail"]
    )
    assert {r["step"]: r["status"] for r in summary["steps"] if r["domain"] == "mine"}["version_domain"] == "completed"
    evaluate = [r for r in summary["steps"] if r["step"] == "evaluate"]
    assert evaluate[0]["status"] == "skipped" and "check_benchmark" in evaluate[0]["detail"]


def test_domains_prepared_side_by_side_fail_alone_and_are_named(world, tmp_path) -> None:
    """Domains are prepared two at a time in worker processes; one whose source is missing fails as its own step,
    with its error, and the others are built as usual."""
    pub, mine = tmp_path / "pub", tmp_path / "mine"
    write_txt_folder(pub, 80, seed=5)
    write_txt_folder(mine, 40, seed=6)
    base = world.model_copy(update={"attack": world.attack.model_copy(update={"domain": "mine"})})
    domains = {
        "public": folder_domain(pub, owner="pub"),
        "mine": folder_domain(mine, owner="me"),
        "gone": folder_domain(tmp_path / "no-such-folder", owner="nobody"),
    }
    p = with_domains(base, domains, near_duplicate_threshold=0.99)
    out = data(profile=p, fail_on_error=False, version=False)
    status = {(r["step"], r["domain"]): r for r in out}
    failed = status[("prepare_domain", "gone")]
    assert failed["status"] == "failed" and "no-such-folder" in failed["detail"], failed
    assert status[("split_domain", "gone")]["status"] == "skipped"
    for d in ("public", "mine"):
        assert status[("prepare_domain", d)]["status"] == "completed"
        assert status[("write_card", d)]["status"] == "completed"
    assert (RunPaths(p).data_staging("public") / "signatures.json").exists()
