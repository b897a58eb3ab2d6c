"""Flow `data`: ingest, validate, split and version every domain, then the disjointness check and the tokenizer.

Thin wiring over `tasks.data.pipeline` (via the steps in `flows.steps`): a failed domain does not stop the others.
"""

from __future__ import annotations

import contextvars
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import flow

from flows.data_runs import log_data_runs
from flows.events import announce_data_versions
from flows.inputs import as_profile, data_hash, tokenizer_sha
from flows.outcomes import Outcome, finish, publish, publish_table, upstream_missing
from flows.placement import check_owner
from flows.runner import run_step
from flows.steps import code_fingerprint
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.hashing import json_sha256
from tasks.data.workers import domain_processes, end_all_workers

PREPARE_PROCESSES = 2  # domains prepared at once: two cores, and the memory of one large domain beside a small one


def _prepare(p: Profile, chosen: list[str]) -> dict[str, Outcome]:
    """Every domain ingested, validated and fingerprinted before any is split: a split decontaminates against all.

    Several domains are prepared PREPARE_PROCESSES at a time, each in a worker process of its own (one per core;
    `tasks.data.workers`), largest first: the largest (public) then runs beside the small ones in turn, never beside
    another large one, which keeps the memory peak that of one large domain and one small. Each domain is still its
    own cached Prefect task run with its own outcome; one that fails does not stop the others."""
    staging = RunPaths(p).data_staging
    code = code_fingerprint("prepare_domain")

    def one(d: str) -> Outcome:
        return run_step("data", "prepare_domain", p, d, code, domain=d, expect=staging(d) / "ngrams.npy")

    lanes = min(PREPARE_PROCESSES, os.cpu_count() or 1, len(chosen))
    if lanes < 2:
        return {d: one(d) for d in chosen}
    with domain_processes(), ThreadPoolExecutor(lanes, thread_name_prefix="prepare") as threads:
        started = {d: threads.submit(contextvars.copy_context().run, one, d) for d in _largest_first(p, chosen)}
        try:
            return {d: started[d].result() for d in chosen}
        except BaseException:  # interrupted (SIGTERM, Ctrl-C): start no further domain, end the running ones
            threads.shutdown(wait=False, cancel_futures=True)
            end_all_workers()
            raise


def _largest_first(p: Profile, chosen: list[str]) -> list[str]:
    """The domains by the bytes their sources are asked for (the public mix's target is the largest), largest first;
    ties keep params.yaml order."""
    data = p.data

    def target(d: str) -> int:
        return p.domains[d].target_bytes or (
            data.public_target_bytes if d == "public" else data.target_bytes_per_domain
        )

    return sorted(chosen, key=lambda d: -target(d))


def _split(p: Profile, chosen: list[str], prepared: dict[str, Outcome]) -> dict[str, Outcome]:
    fingerprints = {d: json_sha256(prepared[d].result) for d in chosen if prepared[d].ok}
    code, paths = code_fingerprint("split_domain"), RunPaths(p)
    return {
        d: upstream_missing("data", "split_domain", d, [prepared[d]])
        or run_step("data", "split_domain", p, d, fingerprints, code, domain=d, expect=paths.split(d, "train"))
        for d in chosen
    }


def _check_disjoint(p: Profile, built: dict[str, Outcome]) -> Outcome:
    """The cross-domain check (splits disjoint, test sets decontaminated). Keyed on what the builds produced, not on
    the data now on disk: the check itself quarantines cross-domain duplicates, so keying on the files it rewrites
    would make every rerun after a fresh build miss the cache. A split that ran again (its files were deleted) can
    rebuild the same result, so the same key: the check must still run, or the rebuilt files would keep the
    duplicates it quarantines."""
    builds = {d: json_sha256(o.result) for d, o in built.items() if o.ok}
    rebuilt = any(o.status == "completed" for o in built.values())
    return run_step(
        "data",
        "check_disjoint",
        p,
        builds,
        code_fingerprint("check_disjoint"),
        expect=RunPaths(p).data_reports_dir / "disjoint.json",
        refresh=rebuilt,
    )


def _tokenizer(p: Profile, built: Outcome, public_hash: str) -> Outcome:
    return upstream_missing("data", "train_tokenizer", None, [built]) or run_step(
        "data",
        "train_tokenizer",
        p,
        public_hash,
        code_fingerprint("train_tokenizer"),
        expect=RunPaths(p).tokenizer_dir,
    )


def _version_and_card(
    p: Profile, chosen: list[str], built: dict[str, Outcome], hashes: dict[str, str], version: bool
) -> list[Outcome]:
    """DVC-version every built domain (unless `version` is off), then write its card (after versioning: the card
    carries the DVC md5 and the tokenizer's token counts)."""
    code = code_fingerprint("version_domain")
    out = [
        upstream_missing("data", "version_domain", d, [built[d]])
        or run_step("data", "version_domain", p, d, hashes.get(d, ""), code, domain=d)
        for d in (chosen if version else [])
    ]
    tokenizer, code = tokenizer_sha(p), code_fingerprint("write_card")
    cards = RunPaths(p).data_reports_dir / "cards"
    return out + [
        upstream_missing("data", "write_card", d, [built[d]])
        or run_step("data", "write_card", p, d, hashes.get(d, ""), tokenizer, code, domain=d, expect=cards / f"{d}.md")
        for d in chosen
    ]


def _publish(p: Profile, out: list[Outcome]) -> None:
    publish("flexo-data", f"data ({p.name})", out)
    validation = [
        o.result.get("validation") for o in out if o.step == "split_domain" and o.ok and o.result.get("validation")
    ]
    publish_table(
        "flexo-data-validation",
        [v if isinstance(v, dict) else {"result": str(v)} for v in validation],
        "Great Expectations validation per domain",
    )


@flow(name="data", result_serializer="json", log_prints=True)
def data(
    profile: str | Profile | None = None,
    domains: list[str] | None = None,
    fail_on_error: bool = True,
    version: bool = True,
) -> list[dict[str, Any]]:
    """Build (ingest → GX validate, then split/dedup/decontaminate) and DVC-version each domain; check that the FLEXMIX
    tasks can be built from the test splits; train the tokenizer; write each domain's data card. As in `dvc repro`,
    every domain is validated and fingerprinted before any is split, so the splits (and their data hashes) do not depend
    on the order domains are built in. Every step is cached: an unchanged rerun is all cache hits. `version=False` (the
    default of `flexo data`) builds without DVC."""
    p = as_profile(profile, check_data=False)  # the flow rewrites the cards the sizing check reads
    chosen = domains or list(p.domains)
    for d in chosen:
        check_owner(d)
    prepared = _prepare(p, chosen)
    built = _split(p, chosen, prepared)
    out = [*prepared.values(), *built.values()]
    if len(chosen) > 1:  # the cross-domain check needs several domains
        out.append(_check_disjoint(p, built))
    hashes = {d: data_hash(p, d) for d in chosen if built[d].ok}  # after the check: what DVC versions
    if hashes:  # the benchmark's tasks fit the test splits: known now, not after the training
        out.append(run_step("data", "check_benchmark", p, sorted(hashes), hashes, code_fingerprint("check_benchmark")))
    if "public" in chosen:
        out.append(_tokenizer(p, built["public"], hashes.get("public", "")))
    out += _version_and_card(p, chosen, built, hashes, version)
    if (
        version and set(chosen) == set(p.domains) and all(o.ok for o in out)
    ):  # every domain built: record the shared stages too
        out.append(run_step("data", "record_shared_stages", p))
    announce_data_versions(p, out)  # a new DVC md5 of a domain: `flexo.data.versioned` starts its owner's retraining
    log_data_runs(p, chosen, out)  # inside a pipeline run: one nested MLflow run per domain that did work
    _publish(p, out)
    return finish(out, fail_on_error)
