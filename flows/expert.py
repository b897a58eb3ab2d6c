"""Flow `expert`: one data owner's expert, on the owner's own worker, reading only data/<domain>.

Router embedding → coordinated training against the frozen M_pub → registration of `flexo-expert-<domain>`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.inputs import as_profile, data_hash, metrics_of, router_row_sha, weights_sha
from flows.outcomes import Outcome, finish, publish, upstream_missing
from flows.placement import check_owner
from flows.runner import run_step
from flows.steps import code_fingerprint
from tasks.core.artifacts import EXPERT_FILE, WEIGHTS_FILE, RunPaths
from tasks.core.config import Profile
from tasks.core.hashing import file_sha256


def _train(p: Profile, domain: str, dhash: str, embedded: Outcome) -> list[Outcome]:
    """The expert (and, where configured, the dense domain model), once the router row exists."""
    paths = RunPaths(p)
    public_sha = weights_sha(paths.public_model_dir)
    out = [
        upstream_missing("expert", "train_expert", domain, [embedded])
        or run_step(
            "expert",
            "train_expert",
            p,
            domain,
            dhash,
            public_sha,
            router_row_sha(p, "public"),  # r_pub, the public flow's (an anchor's M_pub keeps its sha)
            embedded.result.get("sha256", ""),
            code_fingerprint("train_expert"),
            domain=domain,
            expect=paths.expert_dir(domain) / EXPERT_FILE,
        )
    ]
    if p.orchestration.dense_models:
        out.append(
            upstream_missing("expert", "train_dense", domain, [embedded])
            or run_step(
                "expert",
                "train_dense",
                p,
                domain,
                dhash,
                public_sha,
                code_fingerprint("train_dense"),
                domain=domain,
                expect=paths.dense_dir(domain) / "model" / WEIGHTS_FILE,
            )
        )
    return out


def _register(p: Profile, domain: str, dhash: str, embedded: Outcome, trained: Outcome) -> Outcome:
    """`flexo-expert-<domain>`, keyed on the trained file's sha256, with its metrics, router row and DP epsilon."""
    skip = upstream_missing("expert", "register_expert", domain, [trained])
    if skip:
        return skip
    expert_file = trained.result["expert_file"]
    return run_step(
        "expert",
        "register_expert",
        p,
        domain,
        expert_file,
        file_sha256(expert_file),
        dhash,
        metrics_of(trained.result),
        embedded.result.get("path"),
        trained.result.get("dp_epsilon"),
        domain=domain,
    )


@flow(name="expert", flow_run_name="expert-{domain}", result_serializer="json", log_prints=True)
def expert(domain: str, profile: str | Profile | None = None, fail_on_error: bool = True) -> list[dict[str, Any]]:
    """Train and register the expert of `domain` (cached on its data hash, M_pub's sha256, its router row and code)."""
    check_owner(domain)
    p = as_profile(profile)
    dhash = data_hash(p, domain)
    embedded = run_step(
        "expert",
        "embed_domain",
        p,
        domain,
        dhash,
        code_fingerprint("embed_domain"),
        domain=domain,
        expect=RunPaths(p).router_embedding(domain),
    )
    trained = _train(p, domain, dhash, embedded)
    out = [embedded, *trained, _register(p, domain, dhash, embedded, trained[0])]
    publish(f"flexo-expert-{domain}", f"expert {domain} ({p.name})", out)
    return finish(out, fail_on_error)
