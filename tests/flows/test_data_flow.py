"""The `data` flow under Prefect's harness: every domain built, checked, versioned and carded as cached tasks; an
unchanged rerun (right after a fresh build) is all cache hits."""

from __future__ import annotations

import json

import pytest

from flows.data import data
from tasks.artifacts import RunPaths
from tests.tasks.data_world import folder_domain, with_domains, write_txt_folder

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_data_flow_builds_versions_and_cards_each_domain_then_reuses_all(world, tmp_path) -> None:
    pub, mine = tmp_path / "pub", tmp_path / "mine"
    write_txt_folder(pub, 80, seed=5)
    write_txt_folder(mine, 40, seed=6)
    base = world.model_copy(update={"attack": world.attack.model_copy(update={"domain": "mine"})})
    p = with_domains(base, {"public": folder_domain(pub, owner="pub"), "mine": folder_domain(mine, owner="me")},
                     near_duplicate_threshold=0.99)
    first = data(profile=p, fail_on_error=False)
    statuses = {(r["step"], r["domain"]): r["status"] for r in first}
    assert set(statuses.values()) == {"completed"}, first
    assert {("version_domain", "mine"), ("write_card", "public"), ("write_card", "mine")} <= statuses.keys()
    card = json.loads((RunPaths(p).data_reports_dir / "cards" / "mine.json").read_text())
    assert card["owner"] == "me" and card["dvc_md5"].endswith(".dir") and card["tokens"]["train"] > 0

    assert first[-1]["step"] == "record_shared_stages" and first[-1]["result"]["value"] == []  # no dvc.yaml here

    second = data(profile=p, fail_on_error=False)
    reused = {r["status"] for r in second if r["step"] != "record_shared_stages"}  # a dvc commit, never cached
    assert reused == {"cached"}, [(r["step"], r["domain"], r["status"]) for r in second]
