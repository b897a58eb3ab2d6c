"""Flow `data`: ingest, validate, split and version every domain, then the disjointness check and the tokenizer.

Thin wiring over `tasks.data.pipeline` (via `flows.steps`): a failed domain does not stop the others.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import steps as pt
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile


@flow(name="data", result_serializer="json", log_prints=True)
def data(
    profile: str | Profile | None = None, domains: list[str] | None = None, fail_on_error: bool = True
) -> list[dict[str, Any]]:
    """Build (ingest → GX validate, then split/dedup/decontaminate) and DVC-version each domain; check that the FLEXMIX
    tasks can be built from the test splits; train the tokenizer; write each domain's data card. As in `dvc repro`,
    every domain is validated and fingerprinted before any is split, so the splits (and their data hashes) do not depend
    on the order domains are built in."""
    p = pt.as_profile(profile)
    paths = RunPaths(p)
    chosen = domains or list(p.domains)
    for d in chosen:
        pt.check_owner(d)
    out: list[pt.Outcome] = []
    prepared, built = {}, {}
    for d in chosen:  # every domain is prepared before any is split: a split decontaminates against all of them
        prepared[d] = pt.run_step(
            "data",
            "prepare_domain",
            p,
            d,
            pt.code_fingerprint("prepare_domain"),
            domain=d,
            expect=paths.data_staging(d) / "ngrams.npy",
        )
        out.append(prepared[d])
    fingerprints = {d: pt.json_sha256(prepared[d].result) for d in chosen if prepared[d].ok}
    for d in chosen:
        built[d] = pt.upstream_missing("data", "split_domain", d, [prepared[d]]) or pt.run_step(
            "data",
            "split_domain",
            p,
            d,
            fingerprints,
            pt.code_fingerprint("split_domain"),
            domain=d,
            expect=paths.split(d, "train"),
        )
        out.append(built[d])
    if len(chosen) > 1:  # the cross-domain check (splits disjoint, test sets decontaminated) needs several domains
        # Keyed on what the builds produced, not on the data now on disk: the check itself quarantines cross-domain
        # duplicates, so keying on the files it rewrites would make every rerun after a fresh build miss the cache.
        # A split that ran again (its files were deleted) can rebuild the same result, so the same key: the check must
        # still run, or the rebuilt files would keep the duplicates it quarantines.
        builds = {d: pt.json_sha256(built[d].result) for d in chosen if built[d].ok}
        rebuilt = any(built[d].status == "completed" for d in chosen)
        out.append(
            pt.run_step(
                "data",
                "check_disjoint",
                p,
                builds,
                pt.code_fingerprint("check_disjoint"),
                expect=paths.data_reports_dir / "disjoint.json",
                refresh=rebuilt,
            )
        )
    hashes = {d: pt.data_hash(p, d) for d in chosen if built[d].ok}  # after the check: what DVC versions
    if hashes:  # the benchmark's tasks fit the test splits: known now, not after the training
        out.append(
            pt.run_step("data", "check_benchmark", p, sorted(hashes), hashes, pt.code_fingerprint("check_benchmark"))
        )
    if "public" in chosen:
        out.append(
            pt.upstream_missing("data", "train_tokenizer", None, [built["public"]])
            or pt.run_step(
                "data",
                "train_tokenizer",
                p,
                hashes.get("public", ""),
                pt.code_fingerprint("train_tokenizer"),
                expect=paths.tokenizer_dir,
            )
        )
    for d in chosen:
        out.append(
            pt.upstream_missing("data", "version_domain", d, [built[d]])
            or pt.run_step(
                "data", "version_domain", p, d, hashes.get(d, ""), pt.code_fingerprint("version_domain"), domain=d
            )
        )
    tokenizer = pt.file_sha256(paths.tokenizer_dir) if paths.tokenizer_dir.exists() else ""  # token counts in the card
    cards = paths.data_reports_dir / "cards"
    for d in chosen:
        out.append(
            pt.upstream_missing("data", "write_card", d, [built[d]])
            or pt.run_step(
                "data",
                "write_card",
                p,
                d,
                hashes.get(d, ""),
                tokenizer,
                pt.code_fingerprint("write_card"),
                domain=d,
                expect=cards / f"{d}.md",
            )
        )
    if set(chosen) == set(p.domains) and all(o.ok for o in out):  # every domain built: record the shared stages too
        out.append(pt.run_step("data", "record_shared_stages", p))
    pt.publish("flexo-data", f"data ({p.name})", out)
    validation = [
        o.result.get("validation") for o in out if o.step == "split_domain" and o.ok and o.result.get("validation")
    ]
    pt.publish_table(
        "flexo-data-validation",
        [v if isinstance(v, dict) else {"result": str(v)} for v in validation],
        "Great Expectations validation per domain",
    )
    return pt.finish(out, fail_on_error)
