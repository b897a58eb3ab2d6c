"""Training checkpoints without pickle: weights and optimizer tensors as safetensors, everything else as JSON.

Why: a checkpoint is read back by `resume`, and unpickling a file is running code from it. safetensors holds only
tensors; the optimizer's hyper-parameters, the trainer's counters and the file hashes go to JSON. A checkpoint directory
is written to a temporary sibling, flushed to disk and swapped in with renames, so a run killed at any point (mid-write
or between the renames) leaves a complete checkpoint behind: `find_checkpoint` falls back to the `.old` sibling of a
broken swap.

Layout of one checkpoint directory:
    weights.safetensors     the trained parameters by name (all of them for dense runs, the trainable ones for experts)
    optimizer.safetensors   per-parameter optimizer tensors, keys `state.<index>.<name>`
    optimizer.json          param_groups, non-tensor state, and the parameter names the indices refer to
    rng.safetensors         RNG states (torch CPU, CUDA, the DP noise generator) as uint8 tensors
    state.json              trainer counters and metrics, plus the sha256 of every file above
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from model.hashing import sha256_file

WEIGHTS = "weights.safetensors"
OPTIMIZER = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
RNG = "rng.safetensors"
STATE = "state.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match the run that wants to resume from it."""


def optimizer_to_tensors(
    optimizer: torch.optim.Optimizer, param_names: list[str]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into safetensors-able tensors and a JSON-able remainder."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    meta = {"param_groups": state_dict["param_groups"], "scalars": scalars, "param_names": param_names}
    return tensors, meta


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any], param_names: list[str]
) -> None:
    """Load what `optimizer_to_tensors` wrote; refuses a checkpoint written for other parameters."""
    if meta["param_names"] != param_names:
        raise CheckpointError("optimizer state was saved for different parameters than this run trains")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entry in meta["scalars"].items():
        state.setdefault(int(index), {}).update(entry)
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


def save_checkpoint(
    directory: str | Path,
    weights: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    param_names: list[str],
    rng: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> Path:
    """Write a complete checkpoint to `directory` atomically (temporary sibling, then rename)."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(target.name + ".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(scratch / WEIGHTS))
    if optimizer is not None:
        tensors, meta = optimizer_to_tensors(optimizer, param_names)
        save_file(tensors, str(scratch / OPTIMIZER))
        _write_json(scratch / OPTIMIZER_META, meta)
    save_file({k: v.cpu().contiguous() for k, v in rng.items()}, str(scratch / RNG))
    files = [WEIGHTS, RNG] + ([OPTIMIZER, OPTIMIZER_META] if optimizer is not None else [])
    _write_json(scratch / STATE, {**state, "sha256": {name: sha256_file(scratch / name) for name in files}})
    _fsync_directory_files(scratch)
    previous = target.with_name(target.name + ".old")
    if (target / STATE).exists():
        # target is complete, so the old sibling is redundant; without a complete target (a swap was killed between
        # its two renames), `.old` is the only complete checkpoint and stays until the new one is in place
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(target, previous)
    elif target.exists():  # not a checkpoint (never written by this function): nothing to keep
        shutil.rmtree(target)
    os.replace(scratch, target)
    _fsync_directory(target.parent)
    shutil.rmtree(previous, ignore_errors=True)
    return target


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_directory_files(directory: Path) -> None:
    """Flush every file and the directory entry to disk before the rename makes them the checkpoint (power loss)."""
    for path in directory.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    _fsync_directory(directory)


def find_checkpoint(directory: str | Path) -> Path | None:
    """The complete checkpoint at `directory`, or the previous one if a swap was interrupted; None if there is none."""
    target = Path(directory)
    for candidate in (target, target.with_name(target.name + ".old")):
        if (candidate / STATE).exists():
            return candidate
    return None


def read_state(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / STATE
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint state")
    return json.loads(path.read_text(encoding="utf-8"))


def verify(directory: str | Path) -> dict[str, Any]:
    """Read state.json and check every recorded sha256; returns the state."""
    source = Path(directory)
    state = read_state(source)
    for name, expected in state.get("sha256", {}).items():
        if not (source / name).exists():
            raise CheckpointError(f"{source / name}: missing from the checkpoint")
        actual = sha256_file(source / name)
        if actual != expected:
            raise CheckpointError(f"{source / name}: sha256 {actual[:12]}… differs from the recorded {expected[:12]}…")
    return state


def load_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(directory) / WEIGHTS))


def load_optimizer(directory: str | Path, optimizer: torch.optim.Optimizer, param_names: list[str]) -> None:
    source = Path(directory)
    meta = json.loads((source / OPTIMIZER_META).read_text(encoding="utf-8"))
    optimizer_from_tensors(optimizer, load_file(str(source / OPTIMIZER)), meta, param_names)


def load_rng(directory: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(directory) / RNG))


def capture_rng(device: str, noise: torch.Generator | None) -> dict[str, torch.Tensor]:
    """The RNG states a resumed run needs to draw what an uninterrupted one would: torch CPU, CUDA when training on a
    GPU, and the DP noise generator when there is one."""
    state = {"torch_cpu": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["torch_cuda"] = torch.cuda.get_rng_state()
    if noise is not None:
        state["dp_noise"] = noise.get_state()
    return state


def restore_rng(state: dict[str, torch.Tensor], noise: torch.Generator | None) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["torch_cuda"])
    if noise is not None and "dp_noise" in state:
        noise.set_state(state["dp_noise"])
