"""A training process SIGKILLed at any point resumes from what is on disk and ends bit-identical to a run never killed.

Each run is its own process (tests/model/killable_run.py, forked from one server process per lane that did the imports
once), killed with SIGKILL at a chosen point: between checkpoints, half-way through writing a checkpoint, between the
two renames of the checkpoint swap (twice in a row), and after the swap before the old checkpoint is removed. The
counts of each fault point follow that run's schedule (8 steps, checkpoints every 3, validation every 4: `last` at
steps 3 and 6, `best` at step 4); the on-disk state after each kill
is asserted, so a fault that lands elsewhere fails the test instead of passing it vacuously.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from safetensors.torch import load_file

from model.checkpoint import read_state

CHILD = Path(__file__).with_name("killable_run.py")
RUN_TIMEOUT_S = 300


class ForkServer:
    """One `killable_run.py --fork-server` process per lane: each run is a process forked from it after its imports
    (torch, transformers), so a run costs its training instead of a new interpreter's imports. Each run is still its
    own process, SIGKILLed as before."""

    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two lanes share the two cores; 1 thread: deterministic, fast
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), "--fork-server"],
            cwd=CHILD.parent,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, out: Path, name: str, fault: str) -> int:
        """The exit code of one run (negative for the signal that ended it)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps([str(out / "run"), str(out / f"{name}.json"), fault]) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], RUN_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else ""
        assert line, f"no answer from the fork server in {RUN_TIMEOUT_S} s (exit code {self.process.poll()})"
        return int(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_lane = threading.local()
_servers: list[ForkServer] = []


def run_child(out: Path, name: str, fault: str = "none") -> dict | None:
    """Run one training process; the result dict, or None when it was SIGKILLed (any other failure fails the test)."""
    if getattr(_lane, "server", None) is None:
        _lane.server = ForkServer()
        _servers.append(_lane.server)
    code = _lane.server.run(out, name, fault)
    if code == -signal.SIGKILL:
        return None
    assert code == 0, (out / f"{name}.log").read_text()[-3000:]
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
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(chain, tmp_path / name) for name, chain in lanes.items()}
            results = {name: future.result() for name, future in futures.items()}
    finally:
        while _servers:
            _servers.pop().close()

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
