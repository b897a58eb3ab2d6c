"""Data cards: one generated card per domain (markdown + JSON) with source, license, owner, counts, quarantine
reasons and the DVC hash.

Why: a data owner signs off on what was taken from their source and what was thrown out; the card is that record,
regenerated from the built files so it cannot drift from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from tasks.core.artifacts import RunPaths, repo_relative
from tasks.core.config import Profile
from tasks.core.datasets import SPLIT_NAMES, dataset_hash, load_split
from tasks.data.ingest import staging_dir
from tasks.data.sources.mix import SOURCE_COLUMN
from tasks.data.tokenizer_training import token_counts


def _reason_key(reason: str) -> str:
    """The reason's category (the first check that failed, without row specifics)."""
    first = reason.split(";")[0]
    for sep in (": ", " of "):
        first = first.split(sep)[0]
    return first.strip()


def card(profile: Profile, domain: str) -> dict[str, Any]:
    """The facts of one built domain as a dict (what the markdown card renders)."""
    paths = RunPaths(profile)
    prov_path = staging_dir(profile, domain) / "provenance.json"
    provenance = json.loads(prov_path.read_text(encoding="utf-8")) if prov_path.exists() else {}
    splits = {s: load_split(profile, domain, s) for s in SPLIT_NAMES}
    has_tok = (paths.tokenizer_dir / "tokenizer.json").exists()
    for frame in splits.values():  # every document measured once; splits and sources sum the columns
        frame["bytes"] = frame["text"].str.encode("utf-8").str.len()
        frame["tokens"] = token_counts(profile, frame["text"].tolist()) if has_tok else 0
    quarantine = pd.read_parquet(paths.domain_dir(domain) / "quarantine.parquet")
    split_info = json.loads((paths.domain_dir(domain) / "split.json").read_text(encoding="utf-8"))
    reasons: dict[str, int] = {}
    for reason in quarantine["reason"]:
        reasons[_reason_key(str(reason))] = reasons.get(_reason_key(str(reason)), 0) + 1
    return {
        "domain": domain,
        "owner": profile.domains[domain].owner,
        "adapter": ", ".join(profile.domains[domain].adapters),
        "license": provenance.get("license", ""),
        "description": provenance.get("description", ""),
        "provenance": provenance,
        "documents": {s: len(f) for s, f in splits.items()},
        "bytes": {s: int(f["bytes"].sum()) for s, f in splits.items()},
        "tokens": {s: int(f["tokens"].sum()) for s, f in splits.items()} if has_tok else None,
        "quarantined": len(quarantine),
        "quarantine_by_reason": dict(sorted(reasons.items())),
        "ingested": provenance.get("documents"),
        "pii_redactions": provenance.get("redactions", 0),
        "decontamination": {k: split_info.get(k) for k in ("ngram", "moved_to_train", "decontaminated_against")},
        "dvc_md5": dataset_hash(profile, domain),
        "sources": _by_source(splits, provenance, has_tok) if SOURCE_COLUMN in splits["train"].columns else None,
    }


def _by_source(splits: dict[str, pd.DataFrame], provenance: dict[str, Any], has_tok: bool) -> list[dict[str, Any]]:
    """A mixed domain's kept text per source (all splits): documents, bytes, tokens, share of bytes, with the
    license and package versions its adapter recorded."""
    frame = pd.concat(list(splits.values()), ignore_index=True)
    total = int(frame["bytes"].sum()) or 1
    parts = {part.get("adapter"): part for part in provenance.get("parts", [])}
    rows = []
    for name, group in frame.groupby(SOURCE_COLUMN, sort=False):
        size = int(group["bytes"].sum())
        part = parts.get(name, {})
        versions = {k: v for k, v in part.items() if k.endswith(("packages", "package", "version", "versions"))}
        rows.append(
            {
                "source": name,
                "license": part.get("license", ""),
                "versions": versions,
                "documents": len(group),
                "bytes": size,
                "tokens": int(group["tokens"].sum()) if has_tok else None,
                "share": round(size / total, 4),
            }
        )
    return rows


def write_card(profile: Profile, domain: str) -> Path:
    """reports/data/cards/<domain>.md and .json."""
    info = card(profile, domain)
    out = RunPaths(profile).data_reports_dir / "cards"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{domain}.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
    docs, size, toks = info["documents"], info["bytes"], info["tokens"]
    lines = [
        f"# Data card: `{domain}`",
        "",
        f"- **owner**: {info['owner']}",
        f"- **source adapter**: `{info['adapter']}`",
        f"- **what it is**: {info['description']}",
        f"- **license**: {info['license']}",
        f"- **DVC md5** of `{repo_relative(RunPaths(profile).domain_dir(domain))}`: `{info['dvc_md5']}`",
        f"- **ingested**: {info['ingested']} documents; **quarantined**: {info['quarantined']}; "
        f"**PII redactions at ingest**: {info['pii_redactions']}",
        "",
        "| split | documents | bytes | tokens |",
        "|---|---|---|---|",
    ]
    for s in SPLIT_NAMES:
        lines.append(f"| {s} | {docs[s]} | {size[s]} | {toks[s] if toks else 'n/a (no tokenizer yet)'} |")
    if info["sources"]:
        lines += [
            "",
            "## Sources (kept text, all splits)",
            "",
            "| source | documents | bytes | tokens | share | license |",
        ]
        lines.append("|---|---:|---:|---:|---:|---|")
        for row in info["sources"]:
            tokens = row["tokens"] if row["tokens"] is not None else "n/a"
            lines.append(
                f"| `{row['source']}` | {row['documents']} | {row['bytes']} | {tokens} | {row['share']:.1%} | "
                f"{row['license']} |"
            )
    lines += ["", "## Quarantine by reason", ""]
    lines += [f"- {k}: {v}" for k, v in info["quarantine_by_reason"].items()] or ["- none"]
    dec = info["decontamination"]
    lines += [
        "",
        "## Decontamination",
        "",
        f"{dec['ngram']}-gram check of val/test against: {', '.join(dec['decontaminated_against'] or [])}; "
        f"{dec['moved_to_train']} candidates moved to train.",
        "",
        "## Provenance",
        "",
        "```json",
        json.dumps(info["provenance"], indent=2, default=str),
        "```",
    ]
    path = out / f"{domain}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
