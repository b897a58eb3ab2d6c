"""Serving with opt-out and attribution: in-process pyfunc and the real `mlflow models serve` endpoint on loopback.

The reference for "exact opt-out" is the MoE *assembled without* the expert (same top-k), loaded from its own files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tasks.core.errors import ConfigError, RevokedError
from tasks.registry import registry
from tasks.registry.governance import assemble_and_register, revoke
from tasks.registry.serving import FlexoMoE
from tasks.training.assemble import assemble
from tests.profiles import profile_under
from tests.tasks.registry_world import build_world, make_expert, md5_of

PROMPTS = ["Stocks fell", "The theorem"]


def _serving_world(profile):
    """news and math registered, flexo-moe version 1 serving; (world, its pyfunc folder, the MoE without news)."""
    world = build_world(profile)
    files = {d: make_expert(world, d, seed) for seed, d in enumerate(["news", "math"], start=1)}
    for domain, path in files.items():
        registry.register_expert(profile, domain, path, md5_of(domain))
    moe = assemble_and_register(profile)
    ref, pyfunc_dir = registry.resolve_serving_moe(profile)
    without_news = assemble(
        profile, [files["math"]], top_k=int(moe.tags["top_k"]), out_dir=world.paths.root / "without-news"
    )
    return world, pyfunc_dir, FlexoMoE(without_news.model_dir)


@pytest.fixture(scope="module")
def shared(tiny_profile, tmp_path_factory):
    """One serving world for the tests that only read it (registration and assembly are the slow part)."""
    return _serving_world(profile_under(tiny_profile, tmp_path_factory.mktemp("serving")))


@pytest.fixture
def served(tmp_profile):
    """A serving world of the test's own, for the tests that revoke in it."""
    return _serving_world(tmp_profile)


def test_pyfunc_exclude_equals_the_moe_assembled_without_it(shared) -> None:
    import pandas as pd

    import mlflow

    world, pyfunc_dir, reference = shared
    model = mlflow.pyfunc.load_model(str(pyfunc_dir))
    frame = pd.DataFrame({"prompt": PROMPTS})
    full = model.predict(frame)
    excluded = model.predict(frame, params={"exclude": ["news"]})
    opted_in = model.predict(frame, params={"experts": ["math"]})
    max_new = world.profile.registry.generate_max_new_tokens
    for prompt, answer_full, answer_excl, answer_in in zip(PROMPTS, full, excluded, opted_in, strict=True):
        expected = reference.generate(prompt, max_new)
        assert answer_excl["token_ids"] == expected["token_ids"] and answer_excl["text"] == expected["text"]
        assert answer_in["token_ids"] == expected["token_ids"]
        assert answer_excl["attribution"]["news"] == 0.0 and answer_excl["experts"] == ["public", "math"]
        assert abs(sum(answer_full["attribution"].values()) - 1.0) < 1e-5
        assert answer_full["attribution"]["news"] > 0.0
    # the test can fail: with news in, the answers differ from the model without it
    assert [a["token_ids"] for a in full] != [a["token_ids"] for a in excluded]


def test_unknown_or_public_exclusion_is_a_clear_error(shared) -> None:
    _, pyfunc_dir, _ = shared
    moe = FlexoMoE(registry.moe_dir(pyfunc_dir))
    with pytest.raises(ConfigError, match=r"\['reddit'\] are not in this model"):
        moe.dropped(exclude=["reddit"])
    with pytest.raises(ConfigError, match="public expert cannot be excluded"):
        moe.dropped(exclude=["public"])


def test_serving_version_with_a_revoked_expert_is_refused(served) -> None:
    world, _, _ = served
    revoke(world.profile, "news", 1, reason="consent withdrawn", reassemble=None)
    with pytest.raises(RevokedError, match="contains a revoked expert"):
        registry.resolve_serving_moe(world.profile, version="1")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.server
def test_served_endpoint_opt_out_is_exact(shared) -> None:
    """`mlflow models serve` on 127.0.0.1; params={"exclude": [...]} per request, no reload between requests."""
    world, pyfunc_dir, reference = shared
    port = _free_port()
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    log = open(world.paths.root / "serve.log", "w")
    server = subprocess.Popen(
        [
            str(mlflow_cli),
            "models",
            "serve",
            "-m",
            str(pyfunc_dir),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--env-manager",
            "local",
            "-w",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PATH": f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        cwd=str(Path(__file__).resolve().parents[3]),
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (world.paths.root / "serve.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow models serve did not come up in 90 s"
                time.sleep(0.5)

        def ask(params):
            body = json.dumps({"dataframe_records": [{"prompt": p} for p in PROMPTS], "params": params}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
            )
            return json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]

        full, excluded, again = ask({}), ask({"exclude": ["news"]}), ask({})
        for prompt, answer in zip(PROMPTS, excluded, strict=True):
            assert (
                answer["token_ids"]
                == reference.generate(prompt, world.profile.registry.generate_max_new_tokens)["token_ids"]
            )
            assert answer["attribution"]["news"] == 0.0
        assert full == again  # opt-out was per request: the model was not changed
        assert [a["token_ids"] for a in full] != [a["token_ids"] for a in excluded]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_generate_refuses_a_revoked_expert_by_name(served) -> None:
    from tasks.registry.serving import generate_from_registry

    world, _, _ = served
    answer = generate_from_registry(world.profile, "Stocks fell", exclude=["news"])
    assert answer["model"] == "flexo-moe:1" and answer["expert_versions"] == "news:1,math:1"
    revoke(world.profile, "news", 1, reason="consent withdrawn", by="steward-news")
    with pytest.raises(RevokedError, match="flexo-expert-news version 1 was revoked by steward-news"):
        generate_from_registry(world.profile, "Stocks fell", experts=["news"])
    after = generate_from_registry(world.profile, "Stocks fell")
    assert after["model"] == "flexo-moe:2" and after["experts"] == ["public", "math"]


def test_an_opted_out_expert_is_never_reported_selected(shared) -> None:
    """With fewer experts left than top-k, top-k still picks masked ones (at weight 0): they did not answer."""
    _, pyfunc_dir, _ = shared
    moe = FlexoMoE(registry.moe_dir(pyfunc_dir))
    assert moe.model.config.num_experts_per_tok >= 2  # only public remains below: fewer than k
    answer = moe.generate("Stocks fell", 4, exclude=["news", "math"])
    assert answer["selected"] == {"public": 1.0, "news": 0.0, "math": 0.0}
    assert answer["attribution"]["news"] == 0.0 and answer["attribution"]["math"] == 0.0


def test_an_answer_longer_than_the_model_is_a_clear_error(shared) -> None:
    from tasks.registry.serving import generate_from_registry

    world, _, _ = shared
    with pytest.raises(ConfigError, match="exceeds the model's .* positions"):
        generate_from_registry(world.profile, "Stocks fell", max_new_tokens=10**6)
