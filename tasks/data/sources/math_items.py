"""Math domain: school-level question/answer items from DeepMind's published generator `mathematics-dataset`.

Why: a published generator is a legitimate source for the paper's Math set (it mixes in synthetic math); items are
generated from a fixed seed, so the domain is reproducible. Rows carry `question` and `answer` (evaluation scores exact
match on them) and `text` = question + newline + answer.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

from tasks.core.config import REPO_ROOT
from tasks.core.errors import DataError
from tasks.data.sources import Document, Source, register
from tasks.data.sources.textio import budget_reached

# Left out by default (options.exclude_modules overrides; name substrings): modules that take 20-160 ms per item on a
# 2-core CPU (the others take ~2 ms), and the `*_composed` modules, whose statement order depends on object identity
# (not on the seed), which would make the domain's DVC hash change from run to run.
SLOW_MODULES = ("probability", "arithmetic__simplify_surd", "algebra__polynomial_roots", "composed")
LEVELS = 3  # the generator's train-easy / train-medium / train-hard split of its entropy range


def _import_modules() -> Any:
    """Import mathematics_dataset's modules on current sympy (it predates the move of `base_solution_linear`)."""
    importlib.import_module("sympy.solvers.diophantine")
    package = sys.modules["sympy.solvers.diophantine"]
    if not hasattr(package, "base_solution_linear"):
        package.base_solution_linear = importlib.import_module(
            "sympy.solvers.diophantine.diophantine"
        ).base_solution_linear
    try:
        return importlib.import_module("mathematics_dataset.modules.modules"), importlib.import_module(
            "mathematics_dataset.generate_settings"
        )
    except ImportError as exc:
        raise DataError(
            f"mathematics-dataset is not importable ({exc}); `pip install mathematics-dataset==1.0.1`"
        ) from exc


def _flatten(tree: dict, prefix: str = "") -> list[tuple[str, Callable]]:
    out = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.extend(_flatten(value, name + "__") if isinstance(value, dict) else [(name, value)])
    return sorted(out)


def _entropy(level: int) -> Callable[[tuple[float, float]], tuple[float, float]]:
    def modify(range_: tuple[float, float]) -> tuple[float, float]:
        length = range_[1] - range_[0]
        return (range_[0] + level / LEVELS * length, range_[0] + (level + 1) / LEVELS * length)

    return modify


def generate(seed: int, target_bytes: int, max_docs: int, exclude: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Items as dicts (module, question, answer), then one {"excluded": {...}} record. Deterministic only under a fixed
    PYTHONHASHSEED (the generator iterates over sets of strings), which `MathDatasetSource` arranges."""
    import numpy as np
    import sympy.core.random as sympy_random

    modules, settings = _import_modules()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    sympy_random.seed(seed)  # sympy's own generator (randprime etc.) is separate from `random`
    excluded: dict[str, str] = {}
    generators = []
    for level in range(LEVELS):
        for name, fn in _flatten(modules.train(_entropy(level))):
            if any(s in name for s in exclude) or name in excluded:
                continue
            try:
                fn()  # probe: some modules of 1.0.1 use numpy APIs removed in numpy 2
            except (AttributeError, ImportError, TypeError) as err:
                excluded[name] = f"{type(err).__name__}: {err}".splitlines()[0]
                continue
            generators.append((f"L{level}/{name}", fn))
    total = count = attempts = 0
    while not budget_reached(total, count, target_bytes, max_docs):
        if not generators:
            raise DataError(f"mathematics-dataset: every module failed; excluded: {excluded}")
        index = attempts % len(generators)
        attempts += 1
        name, fn = generators[index]
        try:
            problem = fn()
        except (AttributeError, ImportError, TypeError) as err:  # numpy-2 gaps reached only on some draws
            excluded[name] = f"{type(err).__name__}: {err}".splitlines()[0]
            generators.pop(index)
            continue
        question, answer = str(problem.question), str(problem.answer)
        if len(question) > settings.MAX_QUESTION_LENGTH or len(answer) > settings.MAX_ANSWER_LENGTH:
            continue  # the generator's own length rule (generate.py drops these too); resampled, not ingested
        yield {"module": name, "question": question, "answer": answer}
        total += len(question.encode("utf-8")) + len(answer.encode("utf-8")) + 1
        count += 1
    yield {"excluded": excluded}


@register("math_dataset")
class MathDatasetSource(Source):
    license = "Apache-2.0 (mathematics-dataset 1.0.1, DeepMind)"
    description = (
        "question/answer items from DeepMind's mathematics-dataset generator, fixed seed, three difficulty "
        "levels (non-composed modules)"
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.excluded: dict[str, str] = {}

    def origins(self) -> set[str]:
        return {"pypi:mathematics-dataset"}

    def documents(self) -> Iterator[Document]:
        """Run the generator in a child process with PYTHONHASHSEED fixed, so the items are identical on every run."""
        args = {
            "seed": self.context.seed,
            "target_bytes": self.context.target_bytes,
            "max_docs": self.context.max_docs,
            "exclude": list(self.options.get("exclude_modules", SLOW_MODULES)),
        }
        env = {**os.environ, "PYTHONHASHSEED": str(self.context.seed % 2**32), "PYTHONWARNINGS": "ignore"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "tasks.data.sources.math_items", json.dumps(args)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(REPO_ROOT),
        )
        assert proc.stdout is not None
        count = 0
        for line in proc.stdout:
            record = json.loads(line)
            if "excluded" in record:
                self.excluded = record["excluded"]
                continue
            question, answer, name = record["question"], record["answer"], record["module"]
            yield Document(
                f"{self.domain}/{name}#{count}",
                f"{question}\n{answer}",
                f"mathematics_dataset:{name}",
                count,
                meta={"question": question, "answer": answer, "module": name},
            )
            count += 1
        stderr = proc.stderr.read() if proc.stderr else ""
        if proc.wait() != 0:
            raise DataError(f"mathematics-dataset generator failed: {stderr.strip().splitlines()[-1:]}")

    def provenance(self) -> dict:
        return {**super().provenance(), "seed": self.context.seed, "excluded_modules": dict(self.excluded)}


if __name__ == "__main__":
    _args = json.loads(sys.argv[1])
    for _item in generate(_args["seed"], _args["target_bytes"], _args["max_docs"], tuple(_args["exclude"])):
        print(json.dumps(_item), flush=False)
