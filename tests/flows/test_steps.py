"""The step registry: every step runs a function of its own area, imported by name when the step first runs, and its
cache key's code fingerprint covers its whole area package, every package below it and `model/`."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

from flows.bodies import BODIES
from flows.steps import BELOW, STEPS, code_fingerprint
from tasks.core.config import REPO_ROOT
from tests.flows.conftest import area_module, edit


def test_every_step_target_resolves_to_a_function_of_its_area() -> None:
    for name, step in STEPS.items():
        assert isinstance(step.target, str), name  # by name: imported when the step first runs
        module, _, function_name = step.target.partition(":")
        assert step.area in BELOW, (name, step.area)
        assert module.startswith(f"tasks.{step.area}."), (name, module, step.area)
        # importable under its own name: a renamed or moved function fails here (and when its step runs)
        function = step.function
        assert callable(function) and function.__name__ == function_name, name
        assert getattr(importlib.import_module(module), function_name) is function, name
    assert BODIES.keys() == STEPS.keys()


def test_the_registry_imports_no_area_until_a_step_runs() -> None:
    """`flexo data` must not pay for the model areas' imports: in a fresh interpreter, importing the step registry and
    the data flow loads no training, registry, evaluation or privacy code, and neither torch nor transformers."""
    code = (
        "import sys, flows.steps, flows.data; "
        "print(sorted(m for m in sys.modules if m in ('torch', 'transformers') or m.split('.')[:2] in "
        "(['tasks', 'training'], ['tasks', 'registry'], ['tasks', 'evaluation'], ['tasks', 'privacy'])))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def _entry(step: str) -> Path:
    """The module a step's area function lives in, relative to the code root."""
    return Path(*STEPS[step].function.__module__.split(".")).with_suffix(".py")


def test_the_code_fingerprint_covers_the_area_and_the_packages_below_it(code_tree: Path) -> None:
    steps = ("prepare_domain", "train_expert", "assemble", "evaluate", "attack")

    def prints() -> dict[str, str]:
        return {s: code_fingerprint(s, root=code_tree) for s in steps}

    def changed(before: dict[str, str]) -> set[str]:
        return {s for s, value in prints().items() if value != before[s]}

    before = prints()
    assert changed(before) == set()  # nothing edited: the same key, a cache hit
    assert before["evaluate"] == code_fingerprint("evaluate")  # names relative to the root: a copy keys the same

    before = prints()
    edit(area_module(code_tree, STEPS["evaluate"].function))  # e.g. the metrics or the report: not the entry module
    assert changed(before) == {"evaluate"}

    before = prints()
    edit(code_tree / _entry("attack"))  # privacy is beside evaluation, not below it
    assert changed(before) == {"attack"}

    before = prints()
    (code_tree / "tasks" / "evaluation" / "new_helper.py").write_text("VALUE = 1\n")  # a module nobody listed
    assert changed(before) == {"evaluate"}

    before = prints()
    edit(code_tree / _entry("assemble"))  # the registry: below evaluation and privacy, above training
    assert changed(before) == {"assemble", "evaluate", "attack"}

    before = prints()
    edit(code_tree / _entry("train_expert"))
    assert changed(before) == {"train_expert", "assemble", "evaluate", "attack"}

    for shared in ("tasks/core/config.py", "model/__init__.py"):
        before = prints()
        edit(code_tree / shared)
        assert changed(before) == set(steps), shared
