"""Ingest: run a domain's source adapter and write every document it yields, problems included, to the staging area.

Why: ingest is where "nothing silently dropped" starts: every document the adapter produced is written (with its file,
row and any problem), so validation can account for each one as accepted or quarantined.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.errors import DataError
from tasks.data.pii import redact
from tasks.data.sources import get_source


@dataclass(frozen=True)
class IngestResult:
    domain: str
    path: Path
    documents: int
    problems: int
    bytes: int
    redactions: int


def staging_dir(profile: Profile, domain: str) -> Path:
    """runs/data/<domain>/: ingested, accepted and fingerprint files (intermediate, not versioned)."""
    return RunPaths(profile).data_staging(domain)


def portable(text: str | None, roots: list[tuple[str, str]]) -> str | None:
    """Machine paths in a file name or message replaced by stable prefixes, so the data hash is the same on every
    machine (the download cache, the Python standard library and the repository live in different places)."""
    if text is None:
        return None
    for root, label in roots:
        text = text.replace(root, label)
    return text


def _roots(profile: Profile) -> list[tuple[str, str]]:
    import sysconfig

    from tasks.core.config import REPO_ROOT
    from tasks.data.sources.fetch import cache_root

    return [
        (str(cache_root(profile.data.source_cache_dir)), "<source-cache>"),
        (sysconfig.get_paths()["stdlib"], "<python-stdlib>"),
        (str(REPO_ROOT), "<repo>"),
    ]


def ingest(profile: Profile, domain: str, progress=None) -> IngestResult:
    """Write runs/data/<domain>/ingested.parquet (id, text, problem, source_file, row, redactions, domain columns)."""
    source = get_source(profile, domain)
    cfg = profile.domains[domain]
    rows, meta_keys = [], []
    ids: set[str] = set()
    roots = _roots(profile)
    for doc in source.documents():
        if doc.problem and profile.data.on_bad_input == "error":
            raise DataError(
                f"domain '{domain}': {doc.problem}. Fix or remove that input, or set "
                f"data.on_bad_input: quarantine to quarantine it instead"
            )
        if doc.id in ids:
            raise DataError(
                f"domain '{domain}': adapter '{source.name}' yielded id '{doc.id}' twice ({doc.source_file} "
                f"row {doc.row}); ids must be unique"
            )
        ids.add(doc.id)
        text, n = redact(doc.text) if cfg.redact_pii and not doc.problem else (doc.text, 0)
        row = {
            "id": doc.id,
            "text": text,
            "problem": portable(doc.problem, roots),
            "source_file": portable(doc.source_file, roots),
            "row": doc.row,
            "redactions": n,
        }
        for key, value in doc.meta.items():
            if key not in meta_keys:
                meta_keys.append(key)
            row[key] = None if value is None else str(value)
        rows.append(row)
        if progress is not None:
            progress(len(rows))
    if not rows:
        raise DataError(f"domain '{domain}': adapter '{source.name}' produced no documents; check its source options")
    frame = pd.DataFrame(rows)
    for key in meta_keys:
        frame[key] = frame[key].astype("string")
    out = staging_dir(profile, domain)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out / "ingested.parquet", index=False)
    provenance = {
        **source.provenance(),
        "domain": domain,
        "owner": cfg.owner,
        "documents": len(frame),
        "redactions": int(frame["redactions"].sum()),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str), encoding="utf-8")
    return IngestResult(
        domain,
        out / "ingested.parquet",
        len(frame),
        int(frame["problem"].notna().sum()),
        int(frame["text"].str.len().sum()),
        int(frame["redactions"].sum()),
    )
