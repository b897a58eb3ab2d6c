"""The step registry: every step runs a function of its own area, resolved when `flows.steps` is imported, and its
cache key's code fingerprint covers its whole area package, every package below it and `model/`."""

from __future__ import annotations

import importlib
from pathlib import Path

from flows.bodies import BODIES
from flows.steps import BELOW, STEPS, code_fingerprint
from tests.flows.conftest import area_module, edit


def test_every_step_target_resolves_to_a_function_of_its_area() -> None:
    for name, step in STEPS.items():
        target = step.target
        assert callable(target), name
        assert step.area in BELOW, (name, step.area)
        assert target.__module__.startswith(f"tasks.{step.area}."), (name, target.__module__, step.area)
        # importable under its own name: a renamed function fails here (and when flows.steps is imported)
        assert getattr(importlib.import_module(target.__module__), target.__name__) is target, name
    assert BODIES.keys() == STEPS.keys()


def _entry(step: str) -> Path:
    """The module a step's area function lives in, relative to the code root."""
    return Path(*STEPS[step].target.__module__.split(".")).with_suffix(".py")


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
    edit(area_module(code_tree, STEPS["evaluate"].target))  # e.g. the metrics or the report: not the entry module
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
