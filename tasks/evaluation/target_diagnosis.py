"""Why a science target fails, in the mechanism's own numbers: where the router sends each domain's tokens.

Why: a failed target alone says *that* FlexOlmo lost, not why. The mechanism is the router. In coordinated training
each owner's expert takes a share of its 2-expert router mass (`val_router_mass_l<i>` in the expert's train_result.json,
the instrumentation of `model/training` that MLflow shows per layer); after the merge that expert is one of n, and
whether a domain's tokens still reach it is the evaluation's router mass per domain (results.json
`router_mass_by_domain`, and `router_mass_by_domain_rt` after router tuning). Router tuning learns from its proxy sets,
whose in-domain share the report's training notes carry. These functions read only results.json and the training
records, as the targets do, so `flexo targets` adds them to an evaluation written before they existed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from tasks.evaluation.results import FLEX_RT, PROXY_IN_DOMAIN

MASS_KEY = re.compile(r"val_router_mass_l(\d+)$")
PUBLIC = "public"  # the public domain (and the public FFN's name among the experts)


@dataclass(frozen=True)
class Routing:
    """Mean router probability (over layers and tokens of each domain's held-out subset) of one MoE."""

    moe: str  # which MoE it was measured on
    mass: dict[str, dict[str, float]]  # domain -> expert -> mass
    experts: list[str]  # the public FFN first

    @property
    def uniform(self) -> float:
        return 1 / len(self.experts)

    def own(self, domain: str) -> float | None:
        return self.mass.get(domain, {}).get(domain) if domain in self.experts[1:] else None

    def specificity(self) -> tuple[float, float] | None:
        """(mean mass a closed domain's tokens put on their own expert, mean on each other owner's expert)."""
        own, other = [], []
        for domain, row in self.mass.items():
            if domain not in self.experts[1:]:
                continue
            own.append(row[domain])
            other += [row[e] for e in self.experts[1:] if e != domain]
        return (float(np.mean(own)), float(np.mean(other))) if own and other else None

    def describe(self) -> str:
        """One sentence: how domain-specific this router is."""
        spec = self.specificity()
        if spec is None:
            return ""
        return (
            f"in {self.moe} a domain's tokens put {spec[0]:.3f} of their router mass on their own expert and "
            f"{spec[1]:.3f} on each other owner's (uniform {self.uniform:.3f})"
        )


def _domains(payload: dict) -> list[str]:
    """The evaluation's domains in its order (the router-mass arrays' second axis): the bpb table's columns."""
    rows = payload.get("bpb", {})
    first = next(iter(rows.values()), {})
    return [d for d in first if d != "average"]


def routing(payload: dict, tuned: bool) -> Routing | None:
    """The serving MoE's routing (`tuned` False), or the router-tuned copy's; None where results.json has none."""
    key = "router_mass_by_domain_rt" if tuned else "router_mass_by_domain"
    raw, experts, domains = payload.get(key), payload.get("experts", []), _domains(payload)
    if raw is None or not experts:
        return None
    per_domain = np.asarray(raw, dtype=float).mean(axis=0)  # (layers, domains, experts) -> (domains, experts)
    if per_domain.shape != (len(domains), len(experts)):
        return None
    mass = {d: {e: float(per_domain[i, j]) for j, e in enumerate(experts)} for i, d in enumerate(domains)}
    return Routing(FLEX_RT if tuned else "the serving MoE", mass, list(experts))


def served_routing(payload: dict, served: str) -> Routing | None:
    """The routing of the FlexOlmo row the report serves: the router-tuned one where that row is served."""
    return routing(payload, served == FLEX_RT and payload.get("router_mass_by_domain_rt") is not None)


def router_specificity(payload: dict, served: str) -> str:
    """How domain-specific the served FlexOlmo's router is: what the ordering and mixed-document targets rest on."""
    route = served_routing(payload, served)
    return route.describe() if route else ""


def public_reach(payload: dict, served: str) -> str:
    """What the public domain's tokens put on the public FFN (M_pub's own) in the served FlexOlmo."""
    route = served_routing(payload, served)
    row = route.mass.get(PUBLIC) if route else None
    if row is None:
        return ""
    public_ffn = row[route.experts[0]]
    return f"public's tokens put {public_ffn:.3f} on the public FFN in {served} (uniform {route.uniform:.3f})"


def coordinated_mass(record: dict | None) -> float | None:
    """The mean (over layers) router mass an expert took in its own coordinated training, on validation at the
    exported step (else the last validation that recorded it); None for a record without the instrumentation."""
    if not record:
        return None
    history = [h for h in record.get("history", []) if any(MASS_KEY.match(k) for k in h)]
    if not history:
        return None
    exported = record.get("exported_step")
    entry = next((h for h in history if exported is not None and int(h["step"]) == int(exported)), history[-1])
    return float(np.mean([v for k, v in entry.items() if MASS_KEY.match(k)]))


def expert_reach(payload: dict, training: dict[str, dict], served: str, domains: list[str]) -> str:
    """For each of `domains`: the router mass its expert took in its own 2-expert coordinated training, then what the
    domain's tokens put on it in the served MoE, and (router tuning served) how in-domain its proxy set was. One
    legend, then one short entry per domain: the report's verdict cell stays readable with all seven."""
    route = served_routing(payload, served)
    proxies = payload.get("extras", {}).get(served, {}) if served == FLEX_RT else {}
    entries, with_proxy = [], False
    for domain in domains:
        trained = coordinated_mass(training.get(f"expert {domain}"))
        merged = route.own(domain) if route else None
        share = proxies.get(PROXY_IN_DOMAIN.format(domain=domain))
        if trained is None and merged is None:
            continue
        entry = f"{domain} {_num(trained, 2)} → {_num(merged, 3)}"
        if share is not None:
            entry += f", {100 * share:.0f}%"
            with_proxy = True
        entries.append(entry)
    if not entries:
        return ""
    uniform = f", uniform {route.uniform:.3f}" if route else ""
    proxy = "; the share of RT's proxy set that is in-domain" if with_proxy else ""
    legend = f"router mass on the domain's own expert in its 2-expert coordinated training → in {served}"
    return f"{legend}{uniform}{proxy}: " + "; ".join(entries)


def _num(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def optout_reach(payload: dict, moves: list[tuple[str, str]]) -> str:
    """For each (removed expert, moved domain): the mass the moved domain's tokens put on the removed expert in the
    serving MoE (the one the opt-out runs on), beside its own expert's and the uniform share."""
    route = routing(payload, tuned=False)
    if route is None:
        return ""
    parts = []
    for removed, moved in moves:
        row = route.mass.get(moved)
        if row is None or removed not in row:
            continue
        own = f", on its own {row[moved]:.3f}" if moved in route.experts[1:] else ""
        parts.append(f"{moved}'s tokens put {row[removed]:.3f} on the {removed} expert{own}")
    if not parts:
        return ""
    return "; ".join(parts) + f" (uniform {route.uniform:.3f})"
