"""The evaluation drops the dense models and M_pub once no later family reads them, and that changes no number and no
row order of its results.

Why a test of its own: the release is only worth anything if nothing else still holds the models (a weak reference
must die), and the families' new running order must not leak into the report (rows, notes, pass times in
`FAMILIES` order; every score bit-identical to running them in that order with every model held).
"""

from __future__ import annotations

import functools
import gc
import json
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tasks.core.config import Profile
from tasks.evaluation import evaluate as stage
from tasks.evaluation import families
from tasks.evaluation.families import FAMILIES, Step, schedule
from tasks.evaluation.inputs import Models, ReleasedModels
from tasks.evaluation.results import PROMPT
from tasks.evaluation.runner import EvalRun
from tasks.training import route
from tests.tasks.eval_world import bf16_world_under

MOE_FAMILIES = {"score_flexolmo", "score_flexolmo_rt", "score_extra_moes", "score_router_ablations"}


def test_the_dense_readers_run_first_and_each_group_goes_after_its_last_reader() -> None:
    steps = schedule(FAMILIES)
    names = [s.family.__name__ for s in steps]
    assert sorted(names) == sorted(f.__name__ for f in FAMILIES)
    dense_readers = [n for n in names if "dense" in families.USES.get(n, ())]
    assert names[: len(dense_readers)] == [f.__name__ for f in FAMILIES if f.__name__ in dense_readers]
    assert names.index("score_dense_and_btm") < names.index("score_soups") < names.index("score_prompt_routing")
    released = {g: names[i] for i, s in enumerate(steps) for g in s.release}
    assert released == {"dense": "score_no_coordination", "public": "score_unrestricted"}
    assert all(names.index(n) > names.index(released["public"]) for n in MOE_FAMILIES)


def test_a_released_model_is_an_error_but_its_name_still_counts() -> None:
    models = ReleasedModels(["code", "math"], "no family after X reads it")
    assert list(models) == ["code", "math"] and "math" in models and len(models) == 2 and models
    with pytest.raises(RuntimeError, match="'math' was released"):
        models["math"]
    with pytest.raises(RuntimeError, match="released"):
        list(models.values())


@pytest.fixture(scope="module")
def bf16_world(tmp_path_factory: pytest.TempPathFactory, tiny_profile: Profile) -> Profile:
    return bf16_world_under(tmp_path_factory.mktemp("evalrelease"), tiny_profile)


def _without_timings(results: Path) -> dict[str, Any]:
    """results.json with every wall time replaced by its key (the keys' order is the report's and is kept)."""
    data = json.loads(results.read_text())
    data["seconds"] = list(data["seconds"])
    return data


class Liveness:
    """Weak references to the models `load_models` returned, and which of them are still alive when each family
    starts (after a collection: only what something really holds)."""

    def __init__(self) -> None:
        self.dense: list[weakref.ref[torch.nn.Module]] = []
        self.public: weakref.ref[torch.nn.Module] | None = None
        self.at_start: dict[str, tuple[int, bool]] = {}  # family -> (dense models alive, M_pub alive)
        self.encoder_cached: dict[str, int] = {}  # family -> sentence encoders in `load_encoder`'s cache

    def load_models(self, load: Callable[..., Models]) -> Callable[..., Models]:
        @functools.wraps(load)
        def wrapper(*args: Any, **kwargs: Any) -> Models:
            models = load(*args, **kwargs)
            self.dense = [weakref.ref(m) for m in models.dense.values()]
            self.public = weakref.ref(models.public) if models.public is not None else None
            return models

        return wrapper

    def family(self, family: Callable[[EvalRun], None]) -> Callable[[EvalRun], None]:
        @functools.wraps(family)
        def wrapper(run: EvalRun) -> None:
            gc.collect()
            alive = sum(ref() is not None for ref in self.dense)
            self.at_start[family.__name__] = (alive, self.public is not None and self.public() is not None)
            self.encoder_cached[family.__name__] = route.load_encoder.cache_info().currsize
            family(run)

        return wrapper


def test_released_models_are_gone_and_the_results_are_unchanged(
    bf16_world: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = stage.RunPaths(bf16_world)
    with monkeypatch.context() as held:  # as before: `FAMILIES` order, every model held to the end
        held.setattr(stage, "schedule", lambda fams: [Step(f, ()) for f in fams])
        stage.evaluate(bf16_world, progress=False)
    want = _without_timings(paths.eval_dir / "results.json")
    report = (paths.reports_dir / f"flexmix-{bf16_world.name}.md").read_text()

    live = Liveness()
    monkeypatch.setattr(stage, "load_models", live.load_models(stage.load_models))
    monkeypatch.setattr(stage, "FAMILIES", tuple(live.family(f) for f in FAMILIES))
    result = stage.evaluate(bf16_world, progress=False)

    assert _without_timings(result.results_json) == want  # every number, and every row in the same order
    table = [line for line in report.splitlines() if line.startswith("|")]
    assert [line for line in result.report.read_text().splitlines() if line.startswith("|")] == table
    dense = len(bf16_world.closed_domains)
    assert len(live.dense) == dense > 0 and live.public is not None
    assert live.at_start["score_no_coordination"] == (dense, True)  # the last dense reader still has them
    assert live.at_start["score_unrestricted"] == (0, True)
    for name in MOE_FAMILIES:
        assert live.at_start[name] == (0, False), name  # the MoE families run without the dense models and M_pub
    assert PROMPT in want["per_task"]  # prompt routing ran (its encoder was loaded) ...
    assert live.encoder_cached["score_btx"] == 0  # ... and the family after it runs without the encoder
