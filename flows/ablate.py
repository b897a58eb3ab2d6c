"""Flow `ablate`: the paper's router ablations (no bias, random router init, public-model router init).

Per variant: retrain each of `ablation.domains`' experts with that one change, then merge them into the variant's MoE,
which `evaluate` scores against FlexOlmo holding the same owners' normal experts (tasks.training.ablations).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.inputs import as_profile, data_hash, weights_sha
from flows.outcomes import Outcome, finish, publish, upstream_missing
from flows.runner import run_step
from flows.steps import code_fingerprint
from tasks.core.artifacts import EXPERT_FILE, WEIGHTS_FILE, RunPaths
from tasks.core.config import Profile


def _variant(p: Profile, variant: str, public_sha: str) -> list[Outcome]:
    """One variant: its experts retrained, then merged (when every one of them trained)."""
    root = RunPaths(p).ablation_dir(variant)
    code = code_fingerprint("train_ablation")
    trained = [
        run_step(
            "ablate",
            "train_ablation",
            p,
            variant,
            domain,
            data_hash(p, domain),
            public_sha,
            code,
            domain=f"{variant}/{domain}",
            expect=root / "experts" / domain / EXPERT_FILE,
        )
        for domain in p.ablation.domains
    ]
    shas = {o.domain: str(o.result.get("sha256", "")) for o in trained}
    merged = upstream_missing("ablate", "assemble_ablation", variant, trained) or run_step(
        "ablate",
        "assemble_ablation",
        p,
        variant,
        shas,
        code_fingerprint("assemble_ablation"),
        domain=variant,
        expect=root / "moe" / WEIGHTS_FILE,
    )
    return [*trained, merged]


@flow(name="ablate", result_serializer="json", log_prints=True)
def ablate(profile: str | Profile | None = None, fail_on_error: bool = True) -> list[dict[str, Any]]:
    """Train and merge every configured variant (cached on each domain's data hash, M_pub's sha256 and the code)."""
    p = as_profile(profile)
    public_sha = weights_sha(RunPaths(p).public_model_dir)
    out = [o for variant in p.ablation.variants for o in _variant(p, variant, public_sha)]
    publish("flexo-ablate", f"ablate ({p.name})", out)
    return finish(out, fail_on_error)
