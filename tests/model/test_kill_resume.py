"""A training process SIGKILLed at any point resumes from what is on disk and ends bit-identical to a run never killed.

Each run is its own process (tests/model/killable_run.py), killed with SIGKILL at a chosen point: between checkpoints,
half-way through writing a checkpoint, between the two renames of the checkpoint swap (twice in a row), and after the
swap before the old checkpoint is removed. The counts of each fault point follow that run's schedule (8 steps,
checkpoints every 3, validation every 4: `last` at steps 3 and 6, `best` at step 4); the on-disk state after each kill
is asserted, so a fault that lands elsewhere fails the test instead of passing it vacuously.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from safetensors.torch import load_file

from model.checkpoint import read_state

CHILD = Path(__file__).with_name("killable_run.py")


def run_child(out: Path, name: str, fault: str = "none") -> dict | None:
    """Run one training process; the result dict, or None when it was SIGKILLed (any other failure fails the test)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
    }  # two runs share the two cores; 1 thread keeps each deterministic and fast
    done = subprocess.run(
        [sys.executable, str(CHILD), str(out / "run"), str(out / f"{name}.json"), fault],
        cwd=CHILD.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode == -signal.SIGKILL:
        return None
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / f"{name}.json").read_text())


def step_of(directory: Path) -> int:
    return int(read_state(directory)["step"])


def chain_step_kill(out: Path) -> dict:
    assert run_child(out, "a", "step:5") is None
    assert step_of(out / "run" / "last") == 3
    return run_child(out, "final")


def chain_half_written_checkpoint(out: Path) -> dict:
    # save_file calls: last@3 weights/optimizer/rng, best@4 weights/rng, last@6 weights (6th): die with the
    # optimizer unwritten
    assert run_child(out, "a", "save_file:6") is None
    assert step_of(out / "run" / "last") == 3 and not (out / "run" / "last.tmp" / "optimizer.safetensors").exists()
    return run_child(out, "final")


def chain_killed_twice_inside_the_swap(out: Path) -> dict:
    # renames: last@3, best@4, last@6 (last -> last.old, then last.tmp -> last): die between the two of step 6
    assert run_child(out, "a", "replace:4") is None
    assert not (out / "run" / "last").exists() and step_of(out / "run" / "last.old") == 3
    # the resumed run dies again at its first checkpoint rename (best@4 takes renames 1-2, so last@6 is the 3rd): `.old`
    # must still be there, because it is the only complete `last` checkpoint on disk
    assert run_child(out, "b", "replace:3") is None
    assert not (out / "run" / "last").exists() and step_of(out / "run" / "last.old") == 3
    return run_child(out, "final")


def chain_killed_after_the_swap(out: Path) -> dict:
    # directory removals: 7th = removing last.old right after step 6's swap
    assert run_child(out, "a", "rmtree:7") is None
    assert step_of(out / "run" / "last") == 6 and (out / "run" / "last.old").exists()
    return run_child(out, "final")


CHAINS = {
    "step": (chain_step_kill, 3),
    "half-written": (chain_half_written_checkpoint, 3),
    "twice-in-swap": (chain_killed_twice_inside_the_swap, 3),
    "after-swap": (chain_killed_after_the_swap, 6),
}


def test_sigkilled_runs_resume_to_the_uninterrupted_result(tmp_path: Path) -> None:
    lanes = {"reference": lambda out: run_child(out, "final")}
    lanes.update({name: chain for name, (chain, _) in CHAINS.items()})
    for name in lanes:
        (tmp_path / name).mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(chain, tmp_path / name) for name, chain in lanes.items()}
        results = {name: future.result() for name, future in futures.items()}

    reference = results.pop("reference")
    assert reference["resumed_from"] is None and reference["steps"] == 8
    expected = load_file(str(tmp_path / "reference" / "final.safetensors"))
    for name, result in results.items():
        assert result["resumed_from"] == CHAINS[name][1], name
        assert (result["steps"], result["val_loss"], result["best_step"], result["history"]) == (
            reference["steps"],
            reference["val_loss"],
            reference["best_step"],
            reference["history"],
        ), name
        weights = load_file(str(tmp_path / name / "final.safetensors"))
        mismatched = [key for key in expected if not weights[key].equal(expected[key])]
        assert not mismatched, f"{name}: {mismatched[:3]}"
        assert (
            not (tmp_path / name / "run" / "last.tmp").exists() and not (tmp_path / name / "run" / "last.old").exists()
        )
