"""Math domain: school-level question/answer items from DeepMind's published generator `mathematics-dataset`.

Why: a published generator is a legitimate source for the paper's Math set (it mixes in synthetic math); items are
generated from a fixed seed, so the domain is reproducible. Rows carry `question` and `answer` (evaluation scores exact
match on them) and `text` = question + newline + answer.
"""

from __future__ import annotations

import importlib
import random
import sys
from typing import Any, Callable, Iterator

from tasks.errors import DataError
from tasks.sources import Document, Source, register
from tasks.sources.textio import budget_reached

# modules that take 20-160 ms per item on a 2-core CPU (the others take ~2 ms); options.exclude_modules overrides
SLOW_MODULES = ("probability", "arithmetic__simplify_surd", "algebra__polynomial_roots")
LEVELS = 3  # the generator's train-easy / train-medium / train-hard split of its entropy range


def _import_modules() -> Any:
    """Import mathematics_dataset's modules on current sympy (it predates the move of `base_solution_linear`)."""
    importlib.import_module("sympy.solvers.diophantine")
    package = sys.modules["sympy.solvers.diophantine"]
    if not hasattr(package, "base_solution_linear"):
        package.base_solution_linear = importlib.import_module("sympy.solvers.diophantine.diophantine").base_solution_linear
    try:
        return importlib.import_module("mathematics_dataset.modules.modules"), importlib.import_module(
            "mathematics_dataset.generate_settings")
    except ImportError as exc:
        raise DataError(f"mathematics-dataset is not importable ({exc}); `pip install mathematics-dataset==1.0.1`") from exc


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


@register("math_dataset")
class MathDatasetSource(Source):
    license = "Apache-2.0 (mathematics-dataset 1.0.1, DeepMind)"
    description = "question/answer items from DeepMind's mathematics-dataset generator, fixed seed, three difficulty levels"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.excluded: dict[str, str] = {}

    def documents(self) -> Iterator[Document]:
        import numpy as np

        modules, settings = _import_modules()
        random.seed(self.context.seed)
        np.random.seed(self.context.seed % 2**32)
        skip = tuple(self.options.get("exclude_modules", SLOW_MODULES))
        generators = []
        for level in range(LEVELS):
            for name, fn in _flatten(modules.train(_entropy(level))):
                if name.startswith(skip) or name in self.excluded:
                    continue
                try:
                    fn()  # probe: some modules of 1.0.1 use numpy APIs removed in numpy 2
                except (AttributeError, ImportError, TypeError) as err:
                    self.excluded[name] = f"{type(err).__name__}: {err}".splitlines()[0]
                    continue
                generators.append((f"L{level}/{name}", fn))
        if not generators:
            raise DataError("mathematics-dataset: no module generated an item; check numpy/sympy versions")
        total = count = attempts = 0
        while not budget_reached(total, count, self.context.target_bytes, self.context.max_docs):
            if not generators:
                raise DataError(f"mathematics-dataset: every module failed; excluded: {self.excluded}")
            index = attempts % len(generators)
            attempts += 1
            name, fn = generators[index]
            try:
                problem = fn()
            except (AttributeError, ImportError, TypeError) as err:  # numpy-2 gaps reached only on some draws
                self.excluded[name] = f"{type(err).__name__}: {err}".splitlines()[0]
                generators.pop(index)
                continue
            question, answer = str(problem.question), str(problem.answer)
            if len(question) > settings.MAX_QUESTION_LENGTH or len(answer) > settings.MAX_ANSWER_LENGTH:
                continue  # the generator's own length rule (generate.py drops these too); resampled, not ingested
            text = f"{question}\n{answer}"
            yield Document(f"{self.domain}/{name}#{count}", text, f"mathematics_dataset:{name}", count,
                           meta={"question": question, "answer": answer, "module": name})
            total += len(text.encode("utf-8"))
            count += 1

    def provenance(self) -> dict:
        return {**super().provenance(), "seed": self.context.seed, "excluded_modules": dict(self.excluded)}
