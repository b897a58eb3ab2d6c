"""A training run in its own process that SIGKILLs itself at a chosen point: the subject of the kill-and-resume tests.

Usage: python killable_run.py OUT_DIR RESULT_JSON [FAULT]
   or: python killable_run.py --fork-server
       one run per stdin line (a JSON list [OUT_DIR, RESULT_JSON, FAULT]), each in a process forked from this one after
       its imports; prints each run's exit code, negative for a signal (a run costs its training, not a new
       interpreter's imports of torch and transformers)
FAULT is `none` or `<point>:<n>`: die the n-th time the run reaches <point>, where <point> is
  step         after an optimizer step (between checkpoints)
  save_file    after a safetensors file of a checkpoint is written (the new checkpoint is half on disk)
  replace      before a rename of a checkpoint swap (`last` and `best` alike; the test counts them for its schedule)
  rmtree       before a directory removal inside the checkpoint writer
SIGKILL, not an exception: no `finally`, no atexit, nothing flushed, as when the OOM killer or a preempted node ends a
run. The same tiny model, data and spec as tests/model/test_training.py; on success the result and the final weights
are written.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import traceback
from pathlib import Path

from safetensors.torch import save_file
from test_training import fresh_model, make_data, make_spec

import model.checkpoint as checkpoint_module
from model.training import dense_loss, train


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(fault: str):
    """Install the fault; returns the training callback (for `step` faults) or None."""
    if fault == "none":
        return None
    point, nth = fault.split(":")
    remaining = {"n": int(nth)}

    def countdown() -> bool:
        remaining["n"] -= 1
        return remaining["n"] == 0

    if point == "step":
        return lambda event: _die() if event.kind == "step" and countdown() else None
    if point == "save_file":
        real_save = checkpoint_module.save_file

        def save_then_maybe_die(*args, **kwargs):
            real_save(*args, **kwargs)
            if countdown():
                _die()

        checkpoint_module.save_file = save_then_maybe_die
    elif point in ("replace", "rmtree"):
        module, name = (os, "replace") if point == "replace" else (shutil, "rmtree")
        real = getattr(module, name)

        def maybe_die_then(*args, **kwargs):
            if countdown():
                _die()
            return real(*args, **kwargs)

        setattr(module, name, maybe_die_then)
    else:
        raise SystemExit(f"unknown fault point {point!r}")
    return None


def main(out_dir: str, result_path: str, fault: str = "none") -> None:
    callback = _arm(fault)
    model = fresh_model()
    result = train(
        model, dense_loss(1e-4), make_data(0), make_data(1, 400), make_spec(), Path(out_dir), callback=callback
    )
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(result_path).with_suffix(".safetensors"))
    )
    Path(result_path).write_text(
        json.dumps(
            {
                "resumed_from": result.resumed_from,
                "steps": result.steps,
                "val_loss": result.val_loss,
                "best_step": result.best_step,
                "history": result.history,
            }
        )
    )


def fork_server() -> None:
    """Run each requested training in a child forked from this process (imports done, no torch op run yet, so no
    thread pool is copied half-way); the child's output goes to RESULT_JSON's `.log` file (stdout answers the
    caller)."""
    for line in sys.stdin:
        out_dir, result_path, fault = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                with open(Path(result_path).with_suffix(".log"), "w") as log:
                    os.dup2(log.fileno(), 1)
                    os.dup2(log.fileno(), 2)
                main(out_dir, result_path, fault)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--fork-server"]:
        fork_server()
    else:
        main(*sys.argv[1:])
