"""The `revoke` flow (deployment `revoke/on-demand`) under Prefect: it revokes, re-assembles and completes the
revocation certificate with the extraction rates on the revoked owner's training documents, as `flexo revoke` does."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from flows.revoke import revoke
from tasks.registry.governance import audit_trail
from tests.flows.conftest import write_split
from tests.tasks.data_world import prose
from tests.tasks.registry_world import serving_world

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_the_flow_writes_the_certificate_with_the_extraction_rates(tmp_profile) -> None:
    serving_world(tmp_profile, ["news", "math"])
    write_split(tmp_profile, "news", [prose(random.Random(3), 60) for _ in range(12)])
    (row,) = revoke("news", "1", "owner withdrew consent", by="steward-news", profile=tmp_profile)
    assert row["status"] == "completed", row
    certificate = row["result"]["certificate"]
    extraction = certificate["extraction"]
    assert extraction["measured"] is True and certificate["serving_moe"] == "flexo-moe:2"
    assert 0.0 <= extraction["rate_serving_moe"] <= 1.0 and 0.0 <= extraction["rate_public"] <= 1.0
    assert json.loads(Path(certificate["path"]).read_text())["extraction"] == extraction
    last = audit_trail(tmp_profile)[-1]
    assert last.event == "revocation_certificate_extraction" and last.detail["verdict"] == extraction["verdict"]
