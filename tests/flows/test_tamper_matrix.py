"""Issue matrix: a stored artifact changed after registration x every path that reads it. Each cell is refused with
IntegrityError (exit 5) naming the file, before anything is loaded or imported.

One world per module; each cell changes one stored file in the artifact store and puts its bytes back afterwards.
Expert files are read by assembly only (generation, serving, evaluation and the attack load the assembled MoE), so
that row has one cell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch

from flows.commands.run import exit_code
from tasks.core.errors import IntegrityError
from tasks.core.tracking import tracking_uri
from tasks.registry import registry
from tasks.registry.governance import assemble_and_register
from tasks.registry.serving import generate_from_registry, prepare_serving
from tests.flows.conftest import tmp_params
from tests.profiles import profile_under
from tests.tasks.registry_world import build_world, make_expert, md5_of

ARTIFACTS = ("expert file", "MoE weights", "served code", "model card", "MLmodel")
PATHS = ("run/assemble", "evaluate", "attack", "generate", "serve")
CELLS = [("expert file", "run/assemble")] + [(a, p) for a in ARTIFACTS[1:] for p in PATHS]


@pytest.fixture(scope="module")
def world(tiny_profile, tmp_path_factory):
    """news and math registered, flexo-moe version 1 serving; returns (profile, {artifact: stored file}, root)."""
    import mlflow

    root = tmp_path_factory.mktemp("tamper")
    profile = profile_under(tiny_profile, root)
    built = build_world(profile)
    news = registry.register_expert(profile, "news", make_expert(built, "news", 1), md5_of("news"))
    registry.register_expert(profile, "math", make_expert(built, "math", 2), md5_of("math"))
    moe = assemble_and_register(profile)
    stored = Path(urlparse(mlflow.get_logged_model(moe.source.split("/")[-1]).artifact_location).path)
    (model_dir,) = [p.parent for p in stored.rglob("model.safetensors")]
    files = {
        "expert file": Path(urlparse(news.source).path) / "expert.safetensors",
        "MoE weights": model_dir / "model.safetensors",
        "served code": stored / "serving_entry.py",
        "model card": model_dir / "model_card.md",
        "MLmodel": stored / "MLmodel",
    }
    assert all(path.exists() for path in files.values()), files
    return profile, files, root


@pytest.fixture
def tampered(world, request):
    """The module's world with one stored file changed (a byte flipped; code and text get a line appended)."""
    profile, files, root = world
    path = files[request.param]
    original = path.read_bytes()
    if path.suffix in (".safetensors",):
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 0x01]))
    else:
        path.write_bytes(original + b"\nimport os  # tampered\n")
    try:
        yield profile, path, root
    finally:
        path.write_bytes(original)


def _run_path(name: str, profile) -> None:
    """Take `name`'s path through the code it runs in production, up to where it loads (or imports) the model."""
    if name == "run/assemble":
        from flows.assemble import assemble as assemble_flow

        rows = assemble_flow(profile=profile, fail_on_error=False)
        failed = [{"why": row["detail"]} for row in rows if row["status"] == "failed"]
        assert exit_code(failed) == IntegrityError.exit_code, rows
        raise IntegrityError(failed[0]["why"])
    if name == "evaluate":
        from tasks.evaluation.inputs import load_models

        load_models(profile, torch.device("cpu"))
    elif name == "attack":
        from model.hashing import sha256_file
        from tasks.core.artifacts import WEIGHTS_FILE, RunPaths
        from tasks.privacy.models import serving_moe

        serving_moe(profile, sha256_file(RunPaths(profile).public_model_dir / WEIGHTS_FILE))
    elif name == "generate":
        generate_from_registry(profile, "Stocks fell")
    else:
        prepare_serving(profile)


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(("tampered", "path"), CELLS, indirect=["tampered"])
def test_a_changed_stored_file_is_refused_naming_it(tampered, path) -> None:
    profile, changed, _ = tampered
    with pytest.raises(IntegrityError) as caught:
        _run_path(path, profile)
    assert changed.name in str(caught.value) and caught.value.exit_code == 5


def test_every_path_loads_again_once_the_bytes_are_back(world) -> None:
    profile, _, _ = world
    assert generate_from_registry(profile, "Stocks fell")["model"] == "flexo-moe:1"


def _flexo(root: Path, profile, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "FLEXO_PARAMS": str(tmp_params(root)),
        "FLEXO_PROFILE": "tiny",
        "COLUMNS": "1000",  # rich wraps messages at the terminal width; a file name must stay whole
        "MLFLOW_TRACKING_URI": tracking_uri(profile),
    }
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


@pytest.mark.parametrize("tampered", ["served code"], indirect=True)
def test_flexo_serve_exits_5_before_importing_changed_code(tampered) -> None:
    profile, changed, root = tampered
    served = _flexo(root, profile, "serve", "--port", "1")  # a port it never gets to bind: the check comes first
    assert served.returncode == 5 and "serving_entry.py" in served.stderr, served.stderr
    assert "Traceback" not in served.stderr


@pytest.mark.parametrize("tampered", ["MoE weights"], indirect=True)
def test_flexo_generate_exits_5_naming_the_weights(tampered) -> None:
    profile, _, root = tampered
    answered = _flexo(root, profile, "generate", "Stocks fell")
    assert answered.returncode == 5 and "model.safetensors" in answered.stderr, answered.stderr
