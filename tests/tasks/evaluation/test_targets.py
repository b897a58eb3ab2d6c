"""The science targets on hand-built results.json payloads: each one holds, sits within noise and fails
where it should, names where it fails, and the report's Targets section is inserted once and then replaced."""

from __future__ import annotations

import copy
import math

import pytest

from tasks.core.config import TargetsConfig
from tasks.evaluation.results import BTX, FLEX, FLEX_RT, PUBLIC, SOUP_WEIGHTED, UNRESTRICTED, dense_name
from tasks.evaluation.target_section import HEADING, targets_section, with_section
from tasks.evaluation.targets import (
    FAILS,
    HOLDS,
    NOISE,
    NOT_APPLICABLE,
    NOT_MEASURED,
    Scores,
    beyond,
    epochs_target,
    evaluate_targets,
    export_target,
    forgetting_target,
    gain_share,
    gain_share_target,
    mixed_target,
    optout_target,
    ordering_target,
    relative,
)

CFG = TargetsConfig()
BTM_ROW = "BTM (top-2)"
SE = 0.01


def _c(value: float, se: float = SE) -> dict[str, float]:
    return {"value": value, "se": se}


def good_payload() -> dict:
    """Two closed domains where every target holds: FlexOlmo keeps 80% of each specialist's gain, keeps public, each
    opt-out is local, FlexOlmo beats BTM on mixed documents and the task average follows the paper's order."""
    return {
        "experts": ["public", "news", "math"],
        "top_k": 2,
        "bpb": {
            PUBLIC: {"public": _c(2.0), "news": _c(3.0), "math": _c(4.0)},
            dense_name("news"): {"public": _c(2.3), "news": _c(2.0), "math": _c(4.2)},
            dense_name("math"): {"public": _c(2.3), "news": _c(3.2), "math": _c(3.0)},
            FLEX: {"public": _c(2.0), "news": _c(2.2), "math": _c(3.2)},
        },
        "accuracy": {
            PUBLIC: {"average": _c(0.40)},
            SOUP_WEIGHTED: {"average": _c(0.45)},
            BTM_ROW: {"average": _c(0.50)},
            FLEX: {"average": _c(0.60)},
            UNRESTRICTED: {"average": _c(0.62)},
        },
        "opt_out": {
            "news": {"public": _c(0.0), "news": _c(0.5), "math": _c(0.005), "average": _c(0.2)},
            "math": {"public": _c(0.01), "news": _c(-0.01), "math": _c(0.8), "average": _c(0.3)},
        },
        "mixed": {FLEX: {"document": _c(2.5)}, BTM_ROW: {"document": _c(2.8)}},
        "k_sweep": {"1": {"average": _c(3.5)}, "2": {"average": _c(3.0)}, "3": {"average": _c(2.9)}},
        "skipped": {},
    }


def _set(payload: dict, table: str, model: str, column: str, value: float, se: float = SE) -> dict:
    payload[table].setdefault(model, {})[column] = _c(value, se)
    return payload


def test_every_target_holds_on_the_good_run() -> None:
    training = {
        PUBLIC: _train(1.5, [(10, 3.0), (20, 2.5)], 20),
        "expert news": _train(2.0),
        dense_name("news"): _train(3),
    }
    verdicts = evaluate_targets(good_payload(), training, anchored=False, cfg=CFG)
    assert [v.key for v in verdicts] == ["epochs", "export", "gain_share", "forgetting", "opt_out", "mixed", "ordering"]
    assert {v.key: v.verdict for v in verdicts} == dict.fromkeys([v.key for v in verdicts], HOLDS)
    assert all(not v.diagnosis for v in verdicts)


# --- training -------------------------------------------------------------------------------------------------------


def _train(epochs: float, history: list[tuple[int, float]] | None = None, exported: int | None = None) -> dict:
    return {
        "params": {"epochs": epochs},
        "history": [{"step": float(s), "val_loss": v} for s, v in history or []],
        "exported_step": exported,
        "metrics": {},
        "export_reason": "kept the best validation's weights",
    }


def test_epochs_fail_naming_the_model_over_the_budget() -> None:
    verdict = epochs_target({PUBLIC: _train(1.0), "expert math": _train(4.5)}, anchored=False, cfg=CFG)
    assert verdict.verdict == FAILS
    assert "expert math 4.50" in verdict.diagnosis
    assert epochs_target({PUBLIC: _train(4.0)}, anchored=False, cfg=CFG).verdict == HOLDS
    assert epochs_target({}, anchored=False, cfg=CFG).verdict == NOT_MEASURED


def test_an_anchor_is_not_trained_so_only_the_experts_passes_count() -> None:
    anchor = {"params": {"anchor_source": "package"}, "history": [], "metrics": {}}
    verdict = epochs_target({PUBLIC: anchor, "expert news": _train(0.2)}, anchored=True, cfg=CFG)
    assert (verdict.verdict, "expert news" in verdict.measured) == (HOLDS, True)
    assert export_target(anchor, anchored=True, cfg=CFG).verdict == NOT_APPLICABLE


def test_the_export_gap_is_the_exported_steps_validation_against_the_best() -> None:
    near = _train(1.0, [(10, 3.00), (20, 3.05)], exported=20)  # 1.7% above the best: holds
    far = _train(1.0, [(10, 3.00), (20, 3.10)], exported=20)  # 3.3% above: fails
    assert export_target(near, anchored=False, cfg=CFG).verdict == HOLDS
    verdict = export_target(far, anchored=False, cfg=CFG)
    assert verdict.verdict == FAILS and "+3.33%" in verdict.measured and "best validation" in verdict.diagnosis
    assert export_target(None, anchored=False, cfg=CFG).verdict == NOT_MEASURED


# --- the gain share -----------------------------------------------------------------------------------------------


def _table(cells: dict[str, tuple[float, float]], paired: dict[str, dict[str, float]] | None = None) -> Scores:
    """A one-column table ("x") of (value, se) per model; `paired`: reference -> model -> SE of (model − reference)."""
    payload = {
        "bpb": {m: {"x": _c(v, se)} for m, (v, se) in cells.items()},
        "paired_se": {"bpb": {r: {m: {"x": se} for m, se in row.items()} for r, row in (paired or {}).items()}},
    }
    return Scores(payload, "bpb")


def test_the_gain_share_ratio_and_its_delta_method_error() -> None:
    ratio, margin = gain_share(_table({"P": (3.0, 0.0), "F": (2.2, 0.05), "D": (2.0, 0.0)}), "P", "F", "D", "x", 0.7)
    assert ratio.value == pytest.approx(0.8) and ratio.se == pytest.approx(0.05)  # only FlexOlmo varies: se / gain
    assert margin.value == pytest.approx(0.8 - 0.7) and margin.se == pytest.approx(0.05)
    ratio, _ = gain_share(_table({"P": (3.0, 0.03), "F": (2.2, 0.0), "D": (2.0, 0.04)}), "P", "F", "D", "x", 0.7)
    # d/dP = (F - D) / g_d² = 0.2, d/dD = g_f / g_d² = 0.8
    assert ratio.se == pytest.approx(math.hypot(0.2 * 0.03, 0.8 * 0.04))


def test_paired_draws_shrink_a_gap_the_unpaired_sum_would_call_noise() -> None:
    cells = {"a": (2.00, 0.10), "b": (2.05, 0.10)}
    assert _table(cells).gap("b", "a", "x").se == pytest.approx(math.hypot(0.1, 0.1))
    paired = _table(cells, {"a": {"b": 0.01}})  # the two models move together over the draws
    assert paired.gap("b", "a", "x").se == pytest.approx(0.01)
    assert paired.gap("a", "b", "x").se == pytest.approx(0.01)  # either direction of the stored pair
    assert beyond(_table(cells).gap("b", "a", "x"), 2.0) == NOISE and beyond(paired.gap("b", "a", "x"), 2.0) == HOLDS
    # a combination of three: Var(a + b − 2c) from the pairwise covariances
    three = _table({"a": (1.0, 0.1), "b": (1.0, 0.1), "c": (1.0, 0.1)}, {"a": {"b": 0.0, "c": 0.0}, "b": {"c": 0.0}})
    assert three.linear({"a": 1, "b": 1, "c": -2}, "x").se == pytest.approx(0.0, abs=1e-9)  # perfectly correlated


def test_forgetting_reads_the_paired_se_where_results_json_has_it() -> None:
    payload = _set(good_payload(), "bpb", FLEX, "public", 2.02, se=0.1)
    payload["bpb"][PUBLIC]["public"] = _c(2.0, 0.1)
    assert forgetting_target(payload, CFG).verdict == HOLDS  # unpaired: 0.02 ± 0.14
    payload["paired_se"] = {"bpb": {PUBLIC: {FLEX: {"public": 0.005}}}}
    verdict = forgetting_target(payload, CFG)
    assert verdict.verdict == FAILS and "forgets (+0.020 ± 0.005)" in verdict.diagnosis


def test_the_gain_share_fails_on_the_domain_where_flexolmo_keeps_too_little() -> None:
    payload = _set(good_payload(), "bpb", FLEX, "math", 3.6)  # 40% of the math specialist's gain
    verdict = gain_share_target(payload, CFG)
    assert verdict.verdict == FAILS
    assert verdict.diagnosis.startswith("math fails") and "news" not in verdict.diagnosis
    assert "math 0.40 ± " in verdict.measured


def test_the_gain_share_within_noise_when_the_scores_are_noisy() -> None:
    payload = _set(good_payload(), "bpb", FLEX, "math", 3.35, se=0.2)  # 65%, but FlexOlmo's SE is 0.2
    assert gain_share_target(payload, CFG).verdict == NOISE


def test_the_served_flexolmo_row_is_the_router_tuned_one_where_it_ran() -> None:
    payload = good_payload()
    payload["accuracy"][FLEX_RT] = {"average": _c(0.61)}
    payload["bpb"][FLEX_RT] = {"public": _c(2.0), "news": _c(2.9), "math": _c(3.9)}  # keeps little of either gain
    verdict = gain_share_target(payload, CFG)
    assert FLEX_RT in verdict.target and verdict.verdict == FAILS


# --- forgetting -----------------------------------------------------------------------------------------------------


def test_flexolmo_forgetting_public_fails() -> None:
    verdict = forgetting_target(_set(good_payload(), "bpb", FLEX, "public", 2.1), CFG)
    assert verdict.verdict == FAILS and "forgets (+0.100 ± 0.014)" in verdict.diagnosis


def test_a_dense_specialist_that_keeps_public_is_within_noise() -> None:
    verdict = forgetting_target(_set(good_payload(), "bpb", dense_name("math"), "public", 2.01), CFG)
    assert verdict.verdict == NOISE and "dense within noise: math" in verdict.diagnosis


# --- opt-out --------------------------------------------------------------------------------------------------------


def test_an_opt_out_that_moves_another_domain_fails_naming_it() -> None:
    payload = good_payload()
    payload["opt_out"]["news"]["math"] = _c(0.1)
    verdict = optout_target(payload, CFG)
    assert verdict.verdict == FAILS
    assert "removing news moved 1 other domain(s), most math +0.100 ± 0.010" in verdict.diagnosis


def test_an_opt_out_that_does_not_worsen_its_own_domain() -> None:
    payload = good_payload()
    payload["opt_out"]["math"]["math"] = _c(0.01)  # 1 SE: within noise
    assert optout_target(payload, CFG).verdict == NOISE
    payload["opt_out"]["math"]["math"] = _c(-0.3)  # removing the expert helps its own domain
    verdict = optout_target(payload, CFG)
    assert verdict.verdict == FAILS and "removing math: own -0.300" in verdict.diagnosis
    assert optout_target({"opt_out": {}}, CFG).verdict == NOT_MEASURED


# --- mixed documents ------------------------------------------------------------------------------------------------


def test_mixed_documents_fail_within_noise_and_are_not_measured_without_them() -> None:
    payload = _set(good_payload(), "mixed", FLEX, "document", 3.0)
    payload["mixed"][FLEX]["after switch"] = _c(3.4)
    payload["mixed"][BTM_ROW]["after switch"] = _c(3.0)
    verdict = mixed_target(payload, CFG)
    assert verdict.verdict == FAILS and "after switch: -0.400" in verdict.diagnosis
    assert mixed_target(_set(good_payload(), "mixed", FLEX, "document", 2.79), CFG).verdict == NOISE
    old = good_payload()
    del old["mixed"]
    assert mixed_target(old, CFG).verdict == NOT_MEASURED


# --- the ordering ---------------------------------------------------------------------------------------------------


def test_a_reversed_pair_fails_and_the_k_sweep_points_at_a_better_k() -> None:
    payload = _set(good_payload(), "accuracy", FLEX, "average", 0.3)
    verdict = ordering_target(payload, CFG)
    assert verdict.verdict == FAILS
    assert f"{BTM_ROW} < {FLEX}: fails" in verdict.diagnosis
    assert "k-sweep: top-3 averages 2.900" in verdict.diagnosis


def test_the_gain_over_btm_must_reach_ten_percent() -> None:
    payload = _set(good_payload(), "accuracy", FLEX, "average", 0.525, se=0.001)  # above BTM beyond 2 SE, but only +5%
    verdict = ordering_target(payload, CFG)
    assert verdict.verdict == FAILS and "+10% over BTM: fails" in verdict.diagnosis
    noisy = _set(good_payload(), "accuracy", FLEX, "average", 0.55, se=0.05)
    assert ordering_target(noisy, CFG).verdict == NOISE


def test_a_skipped_upper_bound_is_named_not_measured() -> None:
    payload = good_payload()
    del payload["accuracy"][UNRESTRICTED]
    payload["skipped"] = {UNRESTRICTED: "eval.unrestricted_steps is 0", BTX: "eval.btx_router_steps is 0"}
    verdict = ordering_target(payload, CFG)
    assert verdict.verdict == HOLDS
    assert f"{UNRESTRICTED}: not measured (eval.unrestricted_steps is 0)" in verdict.diagnosis


def test_relative_gain_error_by_the_delta_method() -> None:
    gain = relative(_table({"F": (0.6, 0.03), "B": (0.5, 0.02)}), "F", "B", "x")
    assert gain.value == pytest.approx(0.2)
    assert gain.se == pytest.approx(math.hypot(0.03 / 0.5, 1.2 * 0.02 / 0.5))


def test_thresholds_come_from_the_config() -> None:
    payload = _set(good_payload(), "accuracy", FLEX, "average", 0.525, se=0.001)
    assert ordering_target(payload, CFG).verdict == FAILS
    assert ordering_target(payload, CFG.model_copy(update={"min_gain_over_btm": 0.0})).verdict == HOLDS


# --- the report section ---------------------------------------------------------------------------------------------


REPORT = "# FLEXMIX-small: profile `x`\n\nMachine: here.\n\n## Tasks\n\n| task |\n|---|\n\n## Routing\n\ntext\n"


def test_the_section_is_inserted_before_the_tasks_and_then_replaced() -> None:
    good = evaluate_targets(good_payload(), {}, anchored=False, cfg=CFG)
    first = with_section(REPORT, targets_section(good, CFG, paired=False))
    assert first.index(HEADING) < first.index("## Tasks") and first.count(HEADING) == 1
    assert (
        first.replace("\n".join(targets_section(good, CFG, paired=False)) + "\n", "") == REPORT
    )  # nothing else changed
    bad_payload = copy.deepcopy(good_payload())
    bad_payload["accuracy"][FLEX]["average"] = _c(0.3)
    bad = evaluate_targets(bad_payload, {}, anchored=False, cfg=CFG)
    second = with_section(first, targets_section(bad, CFG, paired=False))
    assert second.count(HEADING) == 1 and "| **fails**" in second and second.endswith("## Routing\n\ntext\n")
    assert with_section(second, targets_section(bad, CFG, paired=False)) == second
    assert "| task average: " in second
