"""An expert or router-row file saved twice with the same tensors and metadata has the same bytes, so the sha256 that
cache keys and the registry record is a function of the content (safetensors itself orders the metadata at random)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save_file as safetensors_save_file

from model.hashing import sha256_file
from model.reproducible_safetensors import save_file, sort_metadata
from tasks.core.config import REPO_ROOT

METADATA = {f"key{i}": f"value {i}" for i in range(8)} | {"domain": "math", "note": 'quoted "é" \\ /'}
SAVE = """
import sys, torch
from model.reproducible_safetensors import save_file
from tests.model.test_reproducible_safetensors import METADATA, tensors
save_file(tensors(), sys.argv[1], metadata=METADATA)
"""


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"b": torch.randn(3, 5, generator=g), "a": torch.arange(7, dtype=torch.int64), "c": torch.ones(2).bfloat16()}


def _saved_in_a_new_process(path: Path) -> Path:
    done = subprocess.run([sys.executable, "-c", SAVE, str(path)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return path


def test_the_same_content_gives_the_same_bytes_in_any_process(tmp_path: Path) -> None:
    paths = [_saved_in_a_new_process(tmp_path / f"p{i}.safetensors") for i in range(2)]
    for i in range(2):
        save_file(tensors(), tmp_path / f"h{i}.safetensors", metadata=METADATA)
        paths.append(tmp_path / f"h{i}.safetensors")
    assert len({sha256_file(p) for p in paths}) == 1
    with safe_open(str(paths[0]), framework="pt") as handle:
        assert handle.metadata() == METADATA
    loaded = load_file(str(paths[0]))
    for name, tensor in tensors().items():
        assert torch.equal(loaded[name], tensor), name


def test_sorting_only_reorders_the_header(tmp_path: Path) -> None:
    """safetensors' own file, sorted afterwards: same length, same tensor bytes, metadata in key order."""
    path = tmp_path / "x.safetensors"
    safetensors_save_file(tensors(), str(path), metadata=METADATA)
    before = path.read_bytes()
    sort_metadata(path)
    after = path.read_bytes()
    length = int.from_bytes(after[:8], "little")
    assert len(after) == len(before) and after[:8] == before[:8]
    assert after[8 + length :] == before[8 + length :]
    header = after[8 : 8 + length].decode("utf-8")
    positions = [header.index(f'"{key}":') for key in sorted(METADATA)]
    assert positions == sorted(positions)
