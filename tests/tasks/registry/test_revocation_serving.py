"""Issue matrix, serving column: a MoE served by the real `flexo serve` (MLflow's scoring server) while stewards revoke
four experts four ways. After at most the consent staleness bound, every answer masks them exactly (equal to the MoE
assembled without them), per-request exclusion of them is accepted, and asking for one by name is refused.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tasks.core.tracking import tracking_uri
from tasks.registry import consent
from tasks.registry.governance import revoke
from tasks.registry.serving import FlexoMoE
from tasks.training.assemble import assemble
from tests.flows.conftest import tmp_params
from tests.profiles import profile_under
from tests.tasks.registry_world import KEPT, WAYS, consent_world, revoke_outside_the_cli

pytestmark = pytest.mark.server

PROMPTS = ["Stocks fell", "The theorem"]
TTL_S = 1.0  # the staleness bound recorded in the served model (5 s by default)
STARTUP_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ask(port: int, params: dict) -> tuple[int, object]:
    body = json.dumps({"dataframe_records": [{"prompt": p} for p in PROMPTS], "params": params}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        return 200, json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _wait_up(server: subprocess.Popen, port: int, log) -> None:
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
            return
        except OSError:
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"flexo serve did not come up in {STARTUP_S} s"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def served(tiny_profile, tmp_path_factory):
    """`flexo serve` on flexo-moe version 1 (all five experts); yields (profile, port, answers before revocation,
    the reference answers of the MoE assembled with the kept expert only)."""
    root = tmp_path_factory.mktemp("served")
    profile = profile_under(tiny_profile, root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(consent, "CONSENT_TTL_S", TTL_S)
        _, files = consent_world(profile)
    top_k = min(int(registry_top_k(profile)), 2)  # public + the kept expert: as many as remain when k is larger
    kept_only = FlexoMoE(assemble(profile, [files[KEPT]], top_k=top_k, out_dir=root / "kept-only").model_dir)
    reference = [kept_only.generate(p, profile.registry.generate_max_new_tokens)["token_ids"] for p in PROMPTS]
    port = _free_port()
    env = {
        **os.environ,
        "FLEXO_PARAMS": str(tmp_params(root)),
        "FLEXO_PROFILE": "tiny",
        "COLUMNS": "1000",  # rich wraps messages at the terminal width; a file name must stay whole
        "MLFLOW_TRACKING_URI": tracking_uri(profile),
    }
    log = root / "serve.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_up(server, port, log)
        status, before = _ask(port, {})
        assert status == 200, before
        yield profile, port, before, reference
    finally:
        server.terminate()
        server.wait(timeout=30)


def registry_top_k(profile) -> str:
    from tasks.registry.registry import by_alias

    return by_alias(profile, "flexo-moe", "serving").tags["top_k"]


@pytest.fixture(scope="module")
def after(served):
    """The served MoE's answers once the four revocations were made and the staleness bound passed."""
    profile, port, before, reference = served
    revoke(profile, WAYS["cli"], 1, reason="owner withdrew consent", by="steward")
    revoke_outside_the_cli(profile)
    time.sleep(TTL_S + 0.5)
    status, answers = _ask(port, {})
    assert status == 200, answers
    return profile, port, before, reference, answers


@pytest.mark.parametrize("way", WAYS)
def test_the_served_moe_masks_it_exactly(after, way) -> None:
    _, _, before, reference, answers = after
    domain = WAYS[way]
    assert all(a["attribution"][domain] > 0.0 for a in before)  # the test can fail: it did answer with it before
    for answer, expected in zip(answers, reference, strict=True):
        assert answer["token_ids"] == expected
        assert answer["attribution"][domain] == 0.0 and answer["selected"][domain] == 0.0
        assert domain in answer["withdrawn"] and answer["experts"] == ["public", KEPT]


@pytest.mark.parametrize("way", WAYS)
def test_per_request_exclude_of_it_is_accepted(after, way) -> None:
    _, port, _, reference, _ = after
    status, answers = _ask(port, {"exclude": [WAYS[way]]})
    assert status == 200, answers
    assert [a["token_ids"] for a in answers] == reference


@pytest.mark.parametrize("way", WAYS)
def test_asking_the_server_for_it_is_refused(after, way) -> None:
    _, port, _, _, _ = after
    status, body = _ask(port, {"experts": [WAYS[way]]})
    assert status >= 400 and f"flexo-expert-{WAYS[way]}" in str(body)
