"""Issue matrix: a stored artifact changed after registration x every path that reads it. Each cell is refused with
IntegrityError (exit 5) naming the file, before anything is loaded or imported.

One world per module; each cell changes one stored file in the artifact store and puts its bytes back afterwards.
Expert files are read by assembly only (generation, serving, evaluation and the attack load the assembled MoE), so
that row has one cell. The data split row: news's data built by the data stage without DVC (`flexo data` without
`--version`), one split rewritten as a valid parquet file with one document changed, refused by every step that
reads it for training, routing, evaluation or the attack (generation and serving read no data).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pytest
import torch

from flows.commands.run import exit_code
from tasks.core.artifacts import RunPaths
from tasks.core.datasets import SPLIT_HASHES, SPLIT_NAMES, SPLIT_RECORD, split_hashes
from tasks.core.errors import IntegrityError
from tasks.core.tracking import tracking_uri
from tasks.registry import registry
from tasks.registry.governance import assemble_and_register
from tasks.registry.serving import generate_from_registry, prepare_serving
from tests.flows.conftest import flexo_in_process, tmp_params
from tests.profiles import profile_under
from tests.tasks.data_world import folder_domain, with_domains, write_txt_folder
from tests.tasks.registry_world import build_world, make_expert, md5_of

ARTIFACTS = ("expert file", "MoE weights", "served code", "model card", "MLmodel")
PATHS = ("run/assemble", "evaluate", "attack", "generate", "serve")
CELLS = [("expert file", "run/assemble")] + [(a, p) for a in ARTIFACTS[1:] for p in PATHS]
DATA_PATHS = {"train": "train", "route": "train", "evaluate": "test", "attack": "train"}  # path: the split it reads
DATA_CELLS = [(split, path) for path, split in DATA_PATHS.items()]
SOURCE_DOCS = 100  # news documents the data stage builds the splits from


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


def _env(root: Path, profile) -> dict[str, str]:
    return {
        **os.environ,
        "FLEXO_PARAMS": str(tmp_params(root)),
        "FLEXO_PROFILE": "tiny",
        "COLUMNS": "1000",  # rich wraps messages at the terminal width; a file name must stay whole
        "MLFLOW_TRACKING_URI": tracking_uri(profile),
    }


def _flexo(root: Path, profile, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=_env(root, profile), timeout=300
    )


@pytest.mark.parametrize("tampered", ["served code"], indirect=True)
def test_flexo_serve_exits_5_before_importing_changed_code(tampered) -> None:
    profile, changed, root = tampered
    served = _flexo(root, profile, "serve", "--port", "1")  # a port it never gets to bind: the check comes first
    assert served.returncode == 5 and "serving_entry.py" in served.stderr, served.stderr
    assert "Traceback" not in served.stderr


@pytest.mark.parametrize("tampered", ["MoE weights"], indirect=True)
def test_flexo_generate_exits_5_naming_the_weights(tampered, monkeypatch, capsys) -> None:
    """Through the CLI's entry point in this process: the serve test above is the real process (what it must not
    import needs one); here the check and its exit code are the same code either way."""
    profile, _, root = tampered
    answered = flexo_in_process(monkeypatch, capsys, _env(root, profile), "generate", "Stocks fell")
    assert answered.returncode == 5 and "model.safetensors" in answered.stderr, answered.stderr


@pytest.fixture(scope="module")
def data_world(world):
    """The module's world with news's splits built by the data stage from a text folder, not versioned with DVC
    (what `flexo data` without `--version` leaves): the profile that reads them."""
    from tasks.data.pipeline import build_domain

    profile, _, root = world
    folder = root / "news-source"
    write_txt_folder(folder, SOURCE_DOCS, seed=3)
    owner = profile.domains["news"].owner
    built = with_domains(profile, {**profile.domains, "news": folder_domain(folder, owner=owner)})
    build_domain(built, "news")
    return built


@pytest.fixture
def changed_split(data_world, request):
    """news's split `request.param` rewritten as a valid parquet file with one document changed (what reads silently
    without a check by bytes); its bytes are put back afterwards."""
    path = RunPaths(data_world).split("news", request.param)
    original = path.read_bytes()
    frame = pd.read_parquet(path)
    frame.loc[0, "text"] = f"{frame.loc[0, 'text']} A sentence added after the split was built."
    frame.to_parquet(path, index=False)
    try:
        yield data_world, path
    finally:
        path.write_bytes(original)


def _read_data(name: str, profile) -> None:
    """Take `name`'s path through the code it runs in production, up to where it has read the split."""
    if name == "train":
        from tasks.training.inputs import owner_inputs

        owner_inputs(profile, "news")
    elif name == "route":
        from tasks.training.route import embed_domain

        embed_domain(profile, "news")
    elif name == "evaluate":
        from tasks.evaluation.inputs import load_test_frames

        load_test_frames(profile, ["news"])
    else:
        from tasks.privacy.attack import attack

        attack(profile, "news", progress=False)


@pytest.mark.parametrize(("changed_split", "path"), DATA_CELLS, indirect=["changed_split"])
def test_a_changed_data_split_is_refused_naming_it(changed_split, path) -> None:
    profile, changed = changed_split
    with pytest.raises(IntegrityError) as caught:
        _read_data(path, profile)
    assert str(changed) in str(caught.value) and caught.value.exit_code == 5
    assert split_hashes(profile, "news")[changed.stem] in str(caught.value)  # the bytes found, beside the record


def test_the_built_splits_are_read_without_dvc(data_world) -> None:
    """The data build recorded each split's sha256; unchanged splits read on every path, with no DVC record at all."""
    from tasks.evaluation.inputs import load_test_frames
    from tasks.privacy.documents import training_documents
    from tasks.training.inputs import owner_inputs

    domain_dir = RunPaths(data_world).domain_dir("news")
    recorded = json.loads((domain_dir / SPLIT_RECORD).read_text())[SPLIT_HASHES]
    assert recorded == split_hashes(data_world, "news") and set(recorded) == set(SPLIT_NAMES)
    assert owner_inputs(data_world, "news").steps > 0
    assert len(load_test_frames(data_world, ["news"])["news"]) > 0
    assert len(training_documents(data_world, "news")) > 0


@pytest.mark.parametrize("changed_split", ["train"], indirect=True)
def test_flexo_attack_exits_5_naming_the_changed_split(changed_split, monkeypatch, capsys) -> None:
    profile, changed = changed_split
    env = _env(Path(profile.paths.data_dir).parent, profile)
    attacked = flexo_in_process(monkeypatch, capsys, env, "attack", "news", "--no-mlflow")  # as the generate test
    assert attacked.returncode == 5 and str(changed) in attacked.stderr, attacked.stderr
    assert "Traceback" not in attacked.stderr
