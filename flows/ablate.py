"""Flow `ablate`: the paper's router ablations (no bias, random router init, public-model router init).

Per variant: retrain each of `ablation.domains`' experts with that one change, then merge them into the variant's MoE,
which `evaluate` scores against FlexOlmo holding the same owners' normal experts (tasks.training.ablations).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import steps as pt
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile


@flow(name="ablate", result_serializer="json", log_prints=True)
def ablate(profile: str | Profile | None = None, fail_on_error: bool = True) -> list[dict[str, Any]]:
    """Train and merge every configured variant (cached on each domain's data hash, M_pub's sha256 and the code)."""
    p = pt.as_profile(profile)
    paths = RunPaths(p)
    public_sha = pt.weights_sha(paths.public_model_dir)
    out: list[pt.Outcome] = []
    for variant in p.ablation.variants:
        root = paths.ablation_dir(variant)
        trained = [
            pt.run_step(
                "ablate",
                "train_ablation",
                p,
                variant,
                domain,
                pt.data_hash(p, domain),
                public_sha,
                pt.code_fingerprint("train_ablation"),
                domain=f"{variant}/{domain}",
                expect=root / "experts" / domain / "expert.safetensors",
            )
            for domain in p.ablation.domains
        ]
        out += trained
        shas = {o.domain: str(o.result.get("sha256", "")) for o in trained}
        out.append(
            pt.upstream_missing("ablate", "assemble_ablation", variant, trained)
            or pt.run_step(
                "ablate",
                "assemble_ablation",
                p,
                variant,
                shas,
                pt.code_fingerprint("assemble_ablation"),
                domain=variant,
                expect=root / "moe" / "model.safetensors",
            )
        )
    pt.publish("flexo-ablate", f"ablate ({p.name})", out)
    return pt.finish(out, fail_on_error)
