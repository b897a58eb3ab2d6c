"""Why a target fails, from results.json's router masses and the experts' training records: each number is read
from where the mechanism records it, and the verdict cells name it only where a target fails."""

from __future__ import annotations

import pytest

from tasks.core.config import TargetsConfig
from tasks.evaluation.results import FLEX, FLEX_RT
from tasks.evaluation.target_diagnosis import coordinated_mass, expert_reach, optout_reach, routing
from tasks.evaluation.targets import forgetting_target, gain_share_target, optout_target, ordering_target
from tests.tasks.evaluation.test_targets import _c, _set, good_payload

CFG = TargetsConfig()
EXPERTS = ["public", "news", "math"]


def _mass(per_domain: dict[str, list[float]], layers: int = 2) -> list:
    """(layers, domains, experts): the same rows in every layer but the last, which moves by ±0.02 so that the mean
    over layers is the given row."""
    rows = [per_domain[d] for d in ("public", "news", "math")]
    shifted = [[v + (0.02 if i == 0 else -0.02 if i == 1 else 0.0) for i, v in enumerate(r)] for r in rows]
    back = [[v - (0.02 if i == 0 else -0.02 if i == 1 else 0.0) for i, v in enumerate(r)] for r in rows]
    return [shifted, back][:layers]


def routed_payload() -> dict:
    """`good_payload` with the serving MoE's router mass per domain: each closed domain puts 0.1 on its own expert."""
    payload = good_payload()
    payload["router_mass_by_domain"] = _mass(
        {"public": [0.8, 0.1, 0.1], "news": [0.7, 0.1, 0.2], "math": [0.6, 0.3, 0.1]}
    )
    return payload


def _expert_record(masses: list[float], exported: int = 10) -> dict:
    at = {"step": float(exported), "val_loss": 3.0, **{f"val_router_mass_l{i}": m for i, m in enumerate(masses)}}
    earlier = {"step": 5.0, "val_loss": 3.5, "val_router_mass_l0": 0.99, "val_router_mass_l1": 0.99}
    return {"params": {"epochs": 1.0}, "history": [earlier, at], "exported_step": exported, "metrics": {}}


def test_routing_is_the_mean_over_layers_per_domain_and_expert() -> None:
    route = routing(routed_payload(), tuned=False)
    assert route is not None and route.experts == EXPERTS
    assert route.mass["math"] == pytest.approx({"public": 0.6, "news": 0.3, "math": 0.1})
    assert route.own("math") == pytest.approx(0.1) and route.own("public") is None
    own, other = route.specificity()
    assert own == pytest.approx(0.1) and other == pytest.approx((0.2 + 0.3) / 2)
    assert routing(routed_payload(), tuned=True) is None  # no router tuning in this run


def test_a_mass_array_of_another_shape_is_not_read() -> None:
    payload = routed_payload()
    payload["router_mass_by_domain"] = [[[0.5, 0.5]] * 3]  # 2 experts for a 3-expert MoE
    assert routing(payload, tuned=False) is None


def test_the_coordinated_mass_is_the_exported_steps_mean_over_layers() -> None:
    assert coordinated_mass(_expert_record([0.6, 0.8])) == pytest.approx(0.7)
    no_export = _expert_record([0.6, 0.8]) | {"exported_step": None}
    assert coordinated_mass(no_export) == pytest.approx(0.7)  # the last validation that recorded it
    assert coordinated_mass({"history": [{"step": 1.0, "val_loss": 3.0}]}) is None
    assert coordinated_mass(None) is None


def test_a_failing_gain_share_says_where_the_experts_mass_went() -> None:
    payload = _set(routed_payload(), "bpb", FLEX, "math", 3.6)  # 40% of the math specialist's gain: fails
    training = {"expert math": _expert_record([0.6, 0.8]), "expert news": _expert_record([0.5, 0.5])}
    verdict = gain_share_target(payload, CFG, training)
    assert "why: router mass on the domain's own expert in its 2-expert coordinated training" in verdict.diagnosis
    assert "math 0.70 → 0.100" in verdict.diagnosis and "uniform 0.333" in verdict.diagnosis
    assert "news 0.50" not in verdict.diagnosis  # news holds: not part of the why
    assert "why" not in gain_share_target(good_payload(), CFG, training).diagnosis  # holds: nothing to explain


def test_router_tuning_served_brings_its_own_routing_and_proxy_shares() -> None:
    payload = routed_payload()
    payload["accuracy"][FLEX_RT] = {"average": _c(0.61)}
    payload["bpb"][FLEX_RT] = {"public": _c(2.0), "news": _c(2.9), "math": _c(3.9)}
    payload["router_mass_by_domain_rt"] = _mass(
        {"public": [0.9, 0.05, 0.05], "news": [0.9, 0.05, 0.05], "math": [0.95, 0.03, 0.02]}
    )
    payload["extras"] = {FLEX_RT: {"proxy_in_domain_math": 0.25, "proxy_in_domain_news": 0.5}}
    diagnosis = gain_share_target(payload, CFG, {}).diagnosis
    assert f"→ in {FLEX_RT}" in diagnosis and "the share of RT's proxy set that is in-domain" in diagnosis
    assert "math – → 0.020, 25%" in diagnosis and "news – → 0.050, 50%" in diagnosis


def test_a_failing_opt_out_names_the_mass_on_the_removed_expert() -> None:
    payload = routed_payload()
    payload["opt_out"]["news"]["math"] = _c(0.1)  # removing news moves math
    verdict = optout_target(payload, CFG)
    assert "why: math's tokens put 0.300 on the news expert, on its own 0.100 (uniform 0.333)" in verdict.diagnosis
    assert optout_reach(payload, []) == ""


def test_forgetting_and_ordering_failures_say_how_the_router_routes() -> None:
    forgot = forgetting_target(_set(routed_payload(), "bpb", FLEX, "public", 2.1), CFG)
    assert "why: public's tokens put 0.800 on the public FFN in FlexOlmo (no RT) (uniform 0.333)" in forgot.diagnosis
    reversed_pair = _set(routed_payload(), "accuracy", FLEX, "average", 0.40)
    verdict = ordering_target(reversed_pair, CFG)
    assert "why: in the serving MoE a domain's tokens put 0.100 of their router mass on their own expert and 0.250" in (
        verdict.diagnosis
    )


def test_without_router_masses_a_failure_has_no_why() -> None:
    payload = _set(good_payload(), "bpb", FLEX, "math", 3.6)
    assert "why" not in gain_share_target(payload, CFG, {}).diagnosis
    assert expert_reach(payload, {}, FLEX, ["math"]) == ""
