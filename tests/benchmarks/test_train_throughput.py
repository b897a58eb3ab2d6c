"""The throughput benchmark measures each run in a child process; the child must import what the parent imports (on
the device machine the pinned transformers lives in a `pip install --target` folder named by PYTHONPATH)."""

from __future__ import annotations

import sys

from tests.benchmarks.conftest import load_benchmark

throughput = load_benchmark("train_throughput")
PROBE = "import flexo_probe_module; print(flexo_probe_module.VALUE)"


def _module(folder, value: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flexo_probe_module.py").write_text(f"VALUE = {value!r}\n")


def test_a_child_imports_from_the_parents_pythonpath(tmp_path, monkeypatch) -> None:
    _module(tmp_path / "site", "from PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    done = throughput.spawn([sys.executable, "-c", PROBE])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from PYTHONPATH"


def test_a_child_imports_from_the_parents_sys_path(tmp_path, monkeypatch) -> None:
    """A folder the parent added to sys.path at run time (not in its environment) reaches the child too."""
    _module(tmp_path / "added", "from sys.path")
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "added"))
    done = throughput.spawn([sys.executable, "-c", PROBE])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "from sys.path"


def test_child_env_keeps_the_environment_and_puts_the_repository_first() -> None:
    env = throughput.child_env({"HOME": "/h", "PYTHONPATH": "/wheels:/other"}, ["", "/wheels", "/lib"])
    assert env["HOME"] == "/h"
    assert env["PYTHONPATH"].split(":") == [str(throughput.ROOT), "/wheels", "/other", "/lib"]


def test_the_timed_window_holds_exactly_the_measured_steps(monkeypatch) -> None:
    """The loop reports a step only after the next one ran, so the window cannot be read off step events: it opens at
    the first measured step's batch and closes at the last step's report. A clock that counts training steps reads
    exactly the measured steps."""
    import numpy as np
    import torch

    from model.batching import PackedDataset
    from tasks.core.build import model_sizes
    from tasks.core.config import load_profile

    profile = load_profile("tiny")
    sizes = model_sizes(profile)
    model, loss = throughput.build_model(profile, sizes, "dense")
    section = profile.train_public
    warmup, steps = 2, 3
    spec = throughput.bench_spec(section, warmup + steps, 2, "cpu", "fp32", False)
    tokens = np.random.default_rng(0).integers(2, sizes.vocab_size, 12 * section.seq_len)
    ran = [0]

    def counted(model, input_ids):
        parts = loss(model, input_ids)
        ran[0] += torch.is_grad_enabled()
        return parts

    monkeypatch.setattr(throughput.time, "perf_counter", lambda: float(ran[0]))
    monkeypatch.setattr(throughput.time, "process_time", lambda: float(10 * ran[0]))
    wall, cpu = throughput.time_steps(model, counted, PackedDataset(tokens, section.seq_len), spec, warmup)
    assert (wall, cpu) == (steps, 10 * steps)
