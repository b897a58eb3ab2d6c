"""Issue matrix: every way a steward can revoke an expert x every path that loads or serves one. Each cell is refused
(RevokedError, exit 6) or exactly masked (the answer equals that of the MoE assembled without the withdrawn experts).

One world per module (registration and assembly are the slow part): five experts, four revoked four ways, one kept.
The `cli` way re-assembles (the serving MoE then no longer holds it); the three ways outside the CLI leave the
serving MoE holding experts the registry withdrew, which every path must still honour. The served endpoint is in
tests/tasks/registry/test_revocation_serving.py.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from tasks.core.errors import RevokedError
from tasks.core.tracking import tracking_uri
from tasks.registry import registry
from tasks.registry.consent import holdings
from tasks.registry.serving import FlexoMoE, generate_from_registry
from tasks.training.assemble import assemble
from tests.flows.conftest import flexo_in_process, tmp_params, write_split
from tests.profiles import profile_under
from tests.tasks.data_world import prose
from tests.tasks.registry_world import KEPT, WAYS, consent_world, revoke_outside_the_cli

PROMPT = "Stocks fell"


@pytest.fixture(scope="module")
def revoked(tiny_profile, tmp_path_factory):
    """The world after the four revocations: `flexo revoke` (the real command) on news, then the three ways outside
    it on math, code and reddit. Returns (profile, env for CLI subprocesses, the reference answer)."""
    root = tmp_path_factory.mktemp("revocation")
    profile = profile_under(tiny_profile, root)
    world, files = consent_world(profile)
    env = {
        **os.environ,
        "FLEXO_PARAMS": str(tmp_params(root)),
        "FLEXO_PROFILE": "tiny",
        "COLUMNS": "1000",  # rich wraps messages at the terminal width; a file name must stay whole
        "MLFLOW_TRACKING_URI": tracking_uri(profile),
        "MLFLOW_TRACKING_USERNAME": "steward",
    }
    rng = random.Random(7)
    write_split(profile, WAYS["cli"], [prose(rng, 60) for _ in range(12)])  # what the certificate's attack probes
    cli = _flexo(env, "revoke", WAYS["cli"], "1", "--reason", "owner withdrew consent")
    assert cli.returncode == 0, cli.stderr
    assert "certificate: max |delta logit|" in cli.stderr and "on the serving MoE against" in cli.stderr
    revoke_outside_the_cli(profile)
    serving = registry.by_alias(profile, "flexo-moe", "serving")
    assert serving.version == "2" and WAYS["cli"] not in holdings(serving)
    top_k = min(int(serving.tags["top_k"]), 2)  # public + the kept expert: as many as remain when k is larger
    kept_only = assemble(profile, [files[KEPT]], top_k=top_k, out_dir=root / "kept-only")
    reference = FlexoMoE(kept_only.model_dir).generate(PROMPT, profile.registry.generate_max_new_tokens)
    return profile, env, reference


def _flexo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_the_certificate_of_flexo_revoke_holds_the_extraction_rates_and_flexo_audit_shows_them(
    revoked, monkeypatch, capsys
) -> None:
    """The revoked owner's training documents attacked on the new serving MoE and on M_pub: both rates, compared."""
    from tasks.core.artifacts import RunPaths

    profile, env, _ = revoked
    certificate = json.loads((RunPaths(profile).reports_dir / "revocations" / f"{WAYS['cli']}-v1.json").read_text())
    extraction = certificate["extraction"]
    assert extraction["measured"] is True and certificate["serving_moe"] == "flexo-moe:2"
    assert 0.0 <= extraction["rate_serving_moe"] <= 1.0 and 0.0 <= extraction["rate_public"] <= 1.0
    assert extraction["difference"] == pytest.approx(extraction["rate_serving_moe"] - extraction["rate_public"])
    shown = flexo_in_process(monkeypatch, capsys, env, "audit")
    assert shown.returncode == 0, shown.stderr
    (line,) = [row for row in shown.stderr.splitlines() if "revocation_certificate_extraction" in row]
    assert f"flexo-expert-{WAYS['cli']}" in line and extraction["verdict"] in line


@pytest.mark.parametrize("way", WAYS)
def test_generate_masks_exactly(revoked, way) -> None:
    profile, _, reference = revoked
    domain = WAYS[way]
    answer = generate_from_registry(profile, PROMPT)
    assert answer["model"] == "flexo-moe:2" and answer["experts"] == ["public", KEPT]
    assert answer["token_ids"] == reference["token_ids"] and answer["text"] == reference["text"]
    if way == "cli":  # re-assembled without it: not even present
        assert domain not in answer["attribution"]
    else:
        assert answer["attribution"][domain] == 0.0 and answer["selected"][domain] == 0.0
        assert domain in answer["withdrawn"]


@pytest.mark.parametrize("way", WAYS)
def test_per_request_exclude_is_accepted_and_exact(revoked, way) -> None:
    profile, _, reference = revoked
    answer = generate_from_registry(profile, PROMPT, exclude=[WAYS[way]])
    assert answer["token_ids"] == reference["token_ids"]


@pytest.mark.parametrize("way", WAYS)
def test_asking_for_it_by_name_is_refused(revoked, way) -> None:
    profile, _, _ = revoked
    with pytest.raises(RevokedError, match=f"flexo-expert-{WAYS[way]}") as caught:
        generate_from_registry(profile, PROMPT, experts=[WAYS[way]])
    assert caught.value.exit_code == 6


@pytest.mark.parametrize("way", WAYS)
def test_evaluate_refuses_a_moe_holding_it(revoked, way) -> None:
    from tasks.evaluation.inputs import load_models

    profile, _, _ = revoked
    _refused_or_absent(profile, way, lambda: load_models(profile, torch.device("cpu")))


@pytest.mark.parametrize("way", WAYS)
def test_attack_refuses_a_moe_holding_it(revoked, way) -> None:
    from model.hashing import sha256_file
    from tasks.core.artifacts import WEIGHTS_FILE, RunPaths
    from tasks.privacy.models import serving_moe

    profile, _, _ = revoked
    public_sha = sha256_file(RunPaths(profile).public_model_dir / WEIGHTS_FILE)
    _refused_or_absent(profile, way, lambda: serving_moe(profile, public_sha))


def _refused_or_absent(profile, way: str, load) -> None:
    """The MoE a whole-model path would score holds withdrawn experts: refused, naming each one it holds."""
    domain = WAYS[way]
    with pytest.raises(RevokedError, match="holds withdrawn expert") as caught:
        load()
    serving = registry.by_alias(profile, "flexo-moe", "serving")
    if domain in holdings(serving):
        assert f"{domain}:" in str(caught.value)
    else:
        assert way == "cli"


def test_the_moe_version_that_held_the_cli_revoked_expert_is_refused(revoked) -> None:
    profile, _, _ = revoked
    with pytest.raises(RevokedError, match="contains a revoked expert"):
        generate_from_registry(profile, PROMPT, version="1")


@pytest.mark.parametrize("way", WAYS)
def test_cli_generate_refuses_it_by_name_with_exit_6(revoked, way, monkeypatch, capsys) -> None:
    _, env, _ = revoked
    args = ("generate", PROMPT, "--experts", WAYS[way])
    # one way in a real process (the exit code a shell sees), the others through the same entry point in this one
    refused = _flexo(env, *args) if way == "cli" else flexo_in_process(monkeypatch, capsys, env, *args)
    assert refused.returncode == 6 and f"flexo-expert-{WAYS[way]}" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


def test_cli_generate_accepts_excluding_all_of_them(revoked, monkeypatch, capsys) -> None:
    _, env, reference = revoked
    excluded = flexo_in_process(
        monkeypatch, capsys, env, "generate", PROMPT, "--exclude", ",".join(WAYS.values()), "--json"
    )
    assert excluded.returncode == 0, excluded.stderr
    assert json.loads(excluded.stdout)["token_ids"] == reference["token_ids"]


@pytest.fixture(scope="module")
def reassembled(revoked, prefect_harness):
    """The assemble flow (the pipeline's `assemble` stage) run once on the revoked world: the last fixture of this
    module, since it registers a new serving MoE."""
    from flows.assemble import assemble as assemble_flow

    profile, _, _ = revoked
    rows = assemble_flow(profile=profile, fail_on_error=False)
    assert [r["status"] for r in rows] == ["completed", "completed", "completed"], rows
    return registry.by_alias(profile, "flexo-moe", "serving")


@pytest.mark.parametrize("way", WAYS)
def test_the_assemble_flow_reassembles_without_it(reassembled, way) -> None:
    assert reassembled.version == "3" and holdings(reassembled) == {KEPT: "1"}
    assert WAYS[way] not in holdings(reassembled)
