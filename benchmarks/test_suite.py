"""Benchmark of README command two: the seconds of `make test` (the checks, then the default pytest suite).

Runs the parts of `make test` one after the other in a checkout (default: this one) whose `.venv` is installed,
timing each: the lm-eval extra its first call installs, `make check` (ruff, mypy, import-linter) and the pytest command
of the Makefile's `test` target. Samples the load average while it runs (the machine is shared: a number without its
load means little). Writes one JSON file under benchmarks/results/ (`pipeline.write_result`) and prints it; `--record`
appends a dated section to benchmarks/RESULTS.md. Exits non-zero when a part failed (the time of a failing suite is
still written).

    .venv/bin/python benchmarks/test_suite.py --repo /tmp/clone --install --record

`--install` first times README command one's install (`make install`) in that checkout with empty uv and pip caches
(fresh temporary folders): on a fresh clone, the install's seconds as a newcomer pays them. `--save-durations` also
times every set-up and call (`--durations=0`) and writes each test file's total to tests/durations.json of this
checkout, the order in which `make test` hands files to its workers (longest first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# this folder first: an installed package named `benchmarks` would shadow `benchmarks.pipeline`
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import REPO_ROOT, RESULTS, write_result  # noqa: E402

# the Makefile's `test` target after `check`, with its TEST_WORKERS (PYTEST_PARALLEL)
PYTEST = ["-m", "pytest", "-q", "-m", "not slow"]
MAKEFILE_WORKERS = re.compile(r"^TEST_WORKERS \?= (\d+)$", re.MULTILINE)
DURATIONS = REPO_ROOT / "tests" / "durations.json"
LM_EVAL_STAMP = ".venv/.lm-eval"  # the Makefile's target that installs the lm-eval extra (`make test` depends on it)
LOAD_SAMPLE_S = 5.0
TARGET_S = 5 * 60  # issue 22: the default suite within 5 minutes on 2 cores, after the install
# pytest's closing line, with `-q` bare ("477 passed, 5 deselected in 793.23s (0:13:13)"), else between "=" rules
SUMMARY = re.compile(r"^(?:=+ )?(\d+ (?:passed|failed)[^\n]*?) in [\d.]+s", re.MULTILINE)
# one line of `--durations`: "43.96s setup    tests/flows/test_lineage.py::test_the_pipeline_ran_every_stage"
DURATION = re.compile(r"^([\d.]+)s (?:setup|call|teardown) +([^:\s]+)::", re.MULTILINE)


class LoadSampler:
    """Samples the 1-minute load average every few seconds on a thread, for the mean and maximum over a run."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(LOAD_SAMPLE_S)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        return {"mean": round(statistics.fmean(self.samples), 2), "max": round(max(self.samples), 2)}


def timed(cmd: list[str], repo: Path, env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Runs `cmd` in `repo`, echoing its output; returns seconds, exit code and the output."""
    print(f"$ {' '.join(cmd)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - started
    print(done.stdout[-8000:], flush=True)
    return seconds, done.returncode, done.stdout


def pytest_args(repo: Path, workers: int | None) -> list[str]:
    """The `test` target's pytest arguments in `repo`'s Makefile; `workers` overrides its TEST_WORKERS (a Makefile
    without one runs the suite in one process)."""
    if workers is None:
        found = MAKEFILE_WORKERS.search((repo / "Makefile").read_text())
        workers = int(found.group(1)) if found else 0
    return PYTEST + (["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"] if workers else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="the checkout to run in (its .venv installed)")
    parser.add_argument("--install", action="store_true", help="first time `make install` with empty uv/pip caches")
    parser.add_argument("--pytest-only", action="store_true", help="time only the pytest part, not `make check`")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    parser.add_argument("--workers", type=int, help="pytest-xdist workers (default: the Makefile's TEST_WORKERS)")
    parser.add_argument("--durations", type=int, default=0, help="also print pytest's N slowest set-ups and calls")
    parser.add_argument(
        "--save-durations", action="store_true", help="write every file's seconds to tests/durations.json"
    )
    args = parser.parse_args()
    if args.save_durations:
        args.durations = 0  # pytest's "all of them"
    repo = args.repo.resolve()
    pytest = pytest_args(repo, args.workers)
    python = str(repo / ".venv" / "bin" / "python")
    install_s, install_rc = None, 0
    with LoadSampler() as load:
        if args.install:
            with tempfile.TemporaryDirectory() as uv_cache, tempfile.TemporaryDirectory() as pip_cache:
                env = {**os.environ, "UV_CACHE_DIR": uv_cache, "PIP_CACHE_DIR": pip_cache}
                install_s, install_rc = timed(["make", "install"], repo, env)[:2]
        if install_rc:
            sys.exit(f"make install failed (exit {install_rc})")
        # what `make test` installs on its first call (the lm-eval extra): without it its tests are skipped
        extra_s, extra_rc = timed(["make", LM_EVAL_STAMP], repo)[:2]
        if extra_rc:
            sys.exit(f"make {LM_EVAL_STAMP} failed (exit {extra_rc})")
        check_s, check_rc = (0.0, 0) if args.pytest_only else timed(["make", "check"], repo)[:2]
        timing = args.save_durations or args.durations
        command = [python, *pytest] + ([f"--durations={args.durations}"] if timing else [])
        pytest_s, pytest_rc, output = timed(command, repo) if check_rc == 0 else (0.0, -1, "")
    summary = SUMMARY.findall(output)
    fields = {
        "install_seconds": None if install_s is None else round(install_s, 1),
        "lm_eval_extra_seconds": round(extra_s, 1),
        "test_suite_seconds": round(check_s + pytest_s, 1),
        "check_seconds": None if args.pytest_only else round(check_s, 1),
        "pytest_seconds": round(pytest_s, 1),
        "pytest_summary": summary[-1] if summary else None,
        "passed": check_rc == 0 and pytest_rc == 0,
        "commands": (["make install (empty caches)"] if args.install else [])
        + ([] if args.pytest_only else ["make check"])
        + [f".venv/bin/python {' '.join(pytest)}" + (f" --durations={args.durations}" if timing else "")],
        "load_average_during": load.summary(),
        "target_seconds": TARGET_S,
    }
    path = write_result("test_suite", fields, repo=repo)
    print(json.dumps(json.loads(path.read_text()), indent=2))
    print(f"written {path.relative_to(REPO_ROOT)}")
    if args.record:
        _record(path)
    if args.save_durations and fields["passed"]:
        _save_durations(output)
    sys.exit(0 if fields["passed"] else 1)


def _save_durations(output: str) -> None:
    """Each test file's seconds (the sum of its set-ups, calls and teardowns in `output`), longest first."""
    seconds: dict[str, float] = {}
    for value, test_file in DURATION.findall(output):
        seconds[test_file] = seconds.get(test_file, 0.0) + float(value)
    ranked = {name: round(total, 1) for name, total in sorted(seconds.items(), key=lambda item: -item[1])}
    DURATIONS.write_text(json.dumps(ranked, indent=1) + "\n")
    print(f"written {DURATIONS.relative_to(REPO_ROOT)} ({len(ranked)} files, {sum(ranked.values()):.0f} s)")


def _record(path: Path) -> None:
    """Append the measured suite to benchmarks/RESULTS.md as a dated section."""
    result = json.loads(path.read_text())
    machine = result["machine"]
    flags = ", ".join(flag for flag, present in machine["flags"].items() if present) or "none of the bf16 flags"
    load = result["load_average_during"]
    check = "" if result["check_seconds"] is None else f"`make check` {result['check_seconds']} s, "
    if result["install_seconds"] is not None:
        install = result["install_seconds"]
        check = f"install (`make install`, fresh clone, empty uv and pip caches) {install} s; {check}"
    with RESULTS.open("a") as handle:
        handle.write(
            f"\n## test suite ({result['date'][:10]}, commit {result['git_commit']}, "
            f"{machine['cpus']}-core {machine['cpu_model']})\n\n"
            f"{check}pytest {result['pytest_seconds']} s: **{result['test_suite_seconds']} s** in all "
            f"(target <= {result['target_seconds']} s; passed: {result['passed']}; {result['pytest_summary']}). "
            f"CPU flags {flags}; load average during the run {load['mean']} (max {load['max']}) on "
            f"{machine['cpus']} cores. JSON: `benchmarks/results/{path.name}`.\n\n"
            f"Command: `.venv/bin/python benchmarks/test_suite.py --repo CLONE"
            f"{' --install' if result['install_seconds'] is not None else ''} --record` "
            f"on `git clone` of the commit\n"
        )


if __name__ == "__main__":
    main()
