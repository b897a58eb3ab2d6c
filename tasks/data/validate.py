"""Validation: a Great Expectations 1.x suite per domain decides which documents are accepted and which are
quarantined (with the reason), and whether the domain as a whole passes.

Why GX decides: the same suite that gates the domain (row counts, duplicate and PII rates, length bounds, UTF-8,
character classes, code that parses, math items with an answer) names the failing rows, so the quarantine file and the
report cannot disagree. Row-level expectations carry a `mostly` threshold: failing rows are quarantined; too many of
them fails the suite, which stops this domain (DataError with the report path) while other domains go on.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.core.artifacts import RunPaths, repo_relative
from tasks.core.config import Profile
from tasks.core.errors import DataError
from tasks.core.hashing import file_sha256
from tasks.data.ingest import staging_dir
from tasks.data.pii import PATTERNS
from tasks.data.prose import boilerplate, english_ratio, markup_ratio
from tasks.data.signatures import write_signatures
from tasks.data.sources.mix import SOURCE_COLUMN
from tasks.data.textsig import MinHasher, exact_key_of, word_hashes, words

QUARANTINE_COLUMNS = ["id", "text", "reason", "source_file", "row"]


@dataclass(frozen=True)
class Check:
    """One expectation with the quarantine reason its failing rows get."""

    reason: str
    expectation: Any


@dataclass
class ValidationResult:
    domain: str
    success: bool
    ingested: int
    accepted: int
    quarantined: int
    reasons: dict[str, int]
    report: Path
    checks: list[dict[str, Any]] = field(default_factory=list)


def _letter_ratio(text: str) -> float:
    """Letters and whitespace per character (str.isalpha / str.isspace), looked up per code point in a table, so a
    300 MB domain costs seconds, not minutes."""
    points = _code_points(text)
    return float(_char_classes(points).letters[points].sum()) / max(len(text), 1)


def _printable_ratio(text: str) -> float:
    """1 - control/surrogate/private-use/unassigned characters (newline, tab and CR allowed) per character."""
    points = _code_points(text)
    return 1.0 - float(_char_classes(points).unprintable[points].sum()) / max(len(text), 1)


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)


@dataclass(frozen=True)
class _Classes:
    letters: np.ndarray  # bool per code point: str.isalpha() or str.isspace()
    unprintable: np.ndarray  # bool per code point: a control, surrogate, private-use or unassigned character


BMP = 0x10000  # the Basic Multilingual Plane: almost every character of real text


def _classify(code_points: Iterable[int]) -> _Classes:
    chars = [chr(c) for c in code_points]
    letters = np.fromiter((ch.isalpha() or ch.isspace() for ch in chars), dtype=bool, count=len(chars))
    unprintable = np.fromiter(
        (ch not in "\n\t\r" and unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") for ch in chars),
        dtype=bool,
        count=len(chars),
    )
    return _Classes(letters, unprintable)


@cache
def _char_table() -> tuple[_Classes, np.ndarray]:
    """The classes of every Unicode code point, and which of them are filled in. Why not all at once: classifying all
    1.1M code points took 1.4 s, paid by every domain worker of every data build; the BMP takes about 20 ms, and the
    rest (emoji, historic scripts, private use) is classified the first time a text holds one (`_char_classes`)."""
    size = sys.maxunicode + 1
    table = _Classes(np.zeros(size, dtype=bool), np.zeros(size, dtype=bool))
    known = np.zeros(size, dtype=bool)
    bmp = _classify(range(BMP))
    table.letters[:BMP], table.unprintable[:BMP], known[:BMP] = bmp.letters, bmp.unprintable, True
    return table, known


def _char_classes(code_points: np.ndarray) -> _Classes:
    """The table of every code point's classes, completed first where these code points reach past the BMP (the
    caller indexes only the class it needs)."""
    table, known = _char_table()
    if code_points.size and int(code_points.max()) >= BMP:
        new = np.unique(code_points[~known[code_points]])
        if new.size:
            found = _classify(new.tolist())
            table.letters[new], table.unprintable[new], known[new] = found.letters, found.unprintable, True
    return table


PYTHON_SOURCES = ("stdlib_code", "python_wheels")  # adapters whose documents are Python that must parse


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class RowSignatures:
    """What the duplicate checks computed per row, kept for `tasks.data.signatures` (the split and the cross-domain
    check reuse them): every row's exact key, and the MinHash signature of every row that was indexed. (The
    decontamination n-grams are not kept from here: held through the suite run they would raise the memory peak of
    the largest domain by their size; the fingerprint computes them once the suite's frames are gone.)"""

    exact: list[str]
    minhash: dict[int, np.ndarray]


def features(frame: pd.DataFrame, profile: Profile, domain: str) -> pd.DataFrame:
    """Per-row columns the suite checks: ratios, exact/near-duplicate flags (first occurrence wins), parse status."""
    return signed_features(frame, profile, domain)[0]


def signed_features(frame: pd.DataFrame, profile: Profile, domain: str) -> tuple[pd.DataFrame, RowSignatures]:
    """`features` and the signatures its duplicate checks computed on the way."""
    data = profile.data
    out = frame.copy()
    out["letter_ratio"] = out["text"].map(_letter_ratio)
    out["printable_ratio"] = out["text"].map(_printable_ratio)
    texts, ids = out["text"].tolist(), out["id"].tolist()
    unreadable = out["problem"].notna().tolist() if "problem" in out else [False] * len(out)
    hasher = MinHasher(data.minhash_perms, data.minhash_bands, data.shingle_words, profile.seed)
    signatures = RowSignatures([], {})
    first: dict[str, int] = {}
    dup_of: list[str | None] = []
    near: list[str | None] = []
    indexed: list[int] = []
    for i, text in enumerate(texts):  # each document's words once: its exact key and MinHash signature
        word_list = words(text)
        key = exact_key_of(word_list)
        signatures.exact.append(key)
        if unreadable[i]:  # quarantined anyway; must not shadow a readable document as its "original"
            dup_of.append(None)
            near.append(None)
            continue
        dup_of.append(ids[first[key]] if key in first else None)
        first.setdefault(key, i)
        if dup_of[i] is not None:
            near.append(None)
            continue
        signature = hasher.signature_of(word_hashes(word_list))
        hit = hasher.query_add_signature(signature, data.near_duplicate_threshold)
        near.append(ids[indexed[hit]] if hit is not None else None)
        indexed.append(i)
        signatures.minhash[i] = signature
    out["exact_dup"] = [d is not None for d in dup_of]
    out["near_dup"] = [n is not None for n in near]
    out["duplicate_of"] = [d or n for d, n in zip(dup_of, near, strict=True)]
    english = _min_english_ratio(profile, domain)
    if english > 0:
        out["english_ratio"] = out["text"].map(english_ratio)
    if data.max_markup_ratio < 1:
        out["markup_ratio"] = out["text"].map(markup_ratio)
    if data.drop_boilerplate:
        out["boilerplate"] = out["text"].map(lambda text: boilerplate(text) is not None)
    if set(PYTHON_SOURCES) & set(profile.domains[domain].adapters) or domain == "code":
        # in a mix, only the Python sources have to parse (the other sources' prose is checked as prose)
        python = out[SOURCE_COLUMN].isin(PYTHON_SOURCES) if SOURCE_COLUMN in out else pd.Series(True, index=out.index)
        out["parses"] = [
            _parses(text) if is_python else True for text, is_python in zip(out["text"], python, strict=True)
        ]
    return out, signatures


def _min_english_ratio(profile: Profile, domain: str) -> float:
    cfg = profile.domains[domain]
    return profile.data.min_english_ratio if cfg.min_english_ratio is None else cfg.min_english_ratio


def build_checks(profile: Profile, domain: str, frame: pd.DataFrame) -> list[Check]:
    """The domain's suite: generic text checks plus domain-specific ones (code parses; math has question and answer)."""
    import great_expectations as gx

    return _text_checks(profile, domain, gx.expectations) + _content_checks(profile, domain, frame, gx.expectations)


def _text_checks(profile: Profile, domain: str, e: Any) -> list[Check]:
    """Every domain's checks: readable, non-empty, length, clean UTF-8, PII, duplicates, language sanity, row count."""
    data, cfg = profile.data, profile.domains[domain]
    row_ok = 1.0 - data.max_quarantine_rate
    min_chars = cfg.min_chars or data.min_chars
    max_chars = cfg.max_chars or data.max_chars
    letters = data.min_letter_ratio if cfg.min_letter_ratio is None else cfg.min_letter_ratio
    return [
        Check("unreadable input (see problem)", e.ExpectColumnValuesToBeNull(column="problem", mostly=row_ok)),
        Check("empty text", e.ExpectColumnValuesToNotBeNull(column="text")),
        Check(
            f"length outside [{min_chars}, {max_chars}] chars",
            e.ExpectColumnValueLengthsToBeBetween(
                column="text", min_value=min_chars, max_value=max_chars, mostly=row_ok
            ),
        ),
        Check(
            "not clean UTF-8 text (NUL or replacement characters)",
            e.ExpectColumnValuesToNotMatchRegex(column="text", regex="[\\x00\\ufffd]", mostly=row_ok),
        ),
        Check(
            "PII pattern (email, phone or card number)",
            e.ExpectColumnValuesToNotMatchRegexList(
                column="text", regex_list=list(PATTERNS.values()), mostly=1.0 - data.max_pii_rate
            ),
        ),
        Check(
            "exact duplicate",
            e.ExpectColumnValuesToBeInSet(column="exact_dup", value_set=[False], mostly=1.0 - data.max_duplicate_rate),
        ),
        Check(
            f"near duplicate (Jaccard >= {data.near_duplicate_threshold})",
            e.ExpectColumnValuesToBeInSet(column="near_dup", value_set=[False], mostly=1.0 - data.max_duplicate_rate),
        ),
        Check(
            f"letter ratio below {letters} (not natural-language text)",
            e.ExpectColumnValuesToBeBetween(column="letter_ratio", min_value=letters, max_value=1.0, mostly=row_ok),
        ),
        Check(
            f"control/binary characters (printable ratio below {data.min_printable_ratio})",
            e.ExpectColumnValuesToBeBetween(
                column="printable_ratio", min_value=data.min_printable_ratio, max_value=1.0, mostly=row_ok
            ),
        ),
        Check(
            f"row count outside [{data.min_rows}, {data.max_docs_per_domain}]",
            e.ExpectTableRowCountToBeBetween(min_value=data.min_rows, max_value=data.max_docs_per_domain),
        ),
    ]


def _content_checks(profile: Profile, domain: str, frame: pd.DataFrame, e: Any) -> list[Check]:
    """Checks of what a domain's documents are: code that parses, math items with a question and an answer."""
    data, cfg = profile.data, profile.domains[domain]
    row_ok = 1.0 - data.max_quarantine_rate
    max_chars = cfg.max_chars or data.max_chars
    checks: list[Check] = []
    if "english_ratio" in frame.columns:
        english = _min_english_ratio(profile, domain)
        checks.append(
            Check(
                f"not English prose (common-word ratio below {english})",
                e.ExpectColumnValuesToBeBetween(
                    column="english_ratio", min_value=english, max_value=1.0, mostly=row_ok
                ),
            )
        )
    if "markup_ratio" in frame.columns:
        checks.append(
            Check(
                f"markup residue (above {data.max_markup_ratio:.0%} of characters)",
                e.ExpectColumnValuesToBeBetween(
                    column="markup_ratio", min_value=0.0, max_value=data.max_markup_ratio, mostly=row_ok
                ),
            )
        )
    if "boilerplate" in frame.columns:
        checks.append(
            Check(
                "boilerplate (licence text or table of contents)",
                e.ExpectColumnValuesToBeInSet(column="boilerplate", value_set=[False], mostly=row_ok),
            )
        )
    if "parses" in frame.columns:
        checks.append(
            Check(
                "does not parse as Python",
                e.ExpectColumnValuesToBeInSet(column="parses", value_set=[True], mostly=row_ok),
            )
        )
    if {"question", "answer"} & set(frame.columns) or "math_dataset" in cfg.adapters:
        # in a mix, only the generated items have a question and an answer (the manuals are prose)
        items = (
            {"row_condition": f'{SOURCE_COLUMN}=="math_dataset"', "condition_parser": "pandas"}
            if SOURCE_COLUMN in frame.columns
            else {}
        )
        for col in ("question", "answer"):
            checks.append(
                Check(f"math item without {col}", e.ExpectColumnValuesToNotBeNull(column=col, mostly=row_ok, **items))
            )
            checks.append(
                Check(
                    f"math item with empty {col}",
                    e.ExpectColumnValueLengthsToBeBetween(
                        column=col, min_value=1, max_value=max_chars, mostly=row_ok, **items
                    ),
                )
            )
    return checks


def _run_suite(frame: pd.DataFrame, checks: list[Check], domain: str) -> list[Any]:
    """Run the suite on an in-memory dataframe with an ephemeral GX context; one result per check, in order."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # our own progress display is enough
    batch_def = (
        context.data_sources.add_pandas(name=f"flexo-{domain}")
        .add_dataframe_asset(name=domain)
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=f"flexo-{domain}"))
    for check in checks:
        suite.add_expectation(check.expectation)
    vd = context.validation_definitions.add(gx.ValidationDefinition(data=batch_def, suite=suite, name=f"{domain}-vd"))
    result = vd.run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE", "return_unexpected_index_query": False},
    )
    by_id = {r.expectation_config.id: r for r in result.results}
    return [by_id[c.expectation.id] for c in checks]


def _failing_rows(result: Any, frame: pd.DataFrame) -> list[int]:
    """Positional rows an expectation flagged (null values count as failures for the not-null check only)."""
    indices = result.result.get("unexpected_index_list") or []
    rows = [i["index"] if isinstance(i, dict) else i for i in indices]
    return [int(frame.index.get_loc(r)) for r in rows]


def validate(profile: Profile, domain: str) -> ValidationResult:
    """Validate runs/data/<d>/ingested.parquet: write accepted.parquet, quarantine.parquet and the report.

    Raises DataError (naming the report) if the suite fails; the quarantine and report are written first.
    """
    stage = staging_dir(profile, domain)
    source = stage / "ingested.parquet"
    if not source.exists():
        raise DataError(f"{source}: missing; run the ingest first (`flexo data --domain {domain}`)")
    frame = pd.read_parquet(source).reset_index(drop=True)
    feats, signatures = signed_features(frame, profile, domain)
    # the problem column is checked by GX; rows with no text at all are kept visible to the length check
    checks = build_checks(profile, domain, feats)
    results = _run_suite(feats, checks, domain)
    reasons = _row_reasons(checks, results, feats)
    accepted, quarantine = _partition(frame, feats, reasons, domain)
    rate = len(quarantine) / len(frame)
    success = all(r.success for r in results) and rate <= profile.data.max_quarantine_rate
    stage.mkdir(parents=True, exist_ok=True)
    accepted.to_parquet(stage / "accepted.parquet", index=False)
    _store_signatures(profile, domain, frame, reasons, signatures, stage / "accepted.parquet")
    quarantine.to_parquet(stage / "quarantine.parquet", index=False)
    counts = _reason_counts(reasons)
    summary = _summary(checks, results)
    report = write_report(profile, domain, success, len(frame), len(accepted), quarantine, counts, summary, rate)
    outcome = ValidationResult(domain, success, len(frame), len(accepted), len(quarantine), counts, report, summary)
    record = {**{k: v for k, v in outcome.__dict__.items() if k != "report"}, "report": repo_relative(report)}
    (stage / "validation.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    if not success:
        failed = [s["reason"] for s in summary if not s["success"]]
        if rate > profile.data.max_quarantine_rate:
            failed.append(
                f"quarantine rate {rate:.1%} > data.max_quarantine_rate {profile.data.max_quarantine_rate:.0%}"
            )
        raise DataError(
            f"domain '{domain}' failed its validation suite: {'; '.join(failed)}. "
            f"{len(quarantine)} of {len(frame)} documents quarantined. Report: {report}"
        )
    return outcome


def _store_signatures(
    profile: Profile,
    domain: str,
    frame: pd.DataFrame,
    reasons: dict[int, list[str]],
    signatures: RowSignatures,
    accepted_path: Path,
) -> None:
    """The accepted rows' exact keys and MinHash signatures beside accepted.parquet (same row order), for the split
    and the cross-domain check; a row the duplicate checks did not index gets its signature computed here."""
    data = profile.data
    hasher = MinHasher(data.minhash_perms, data.minhash_bands, data.shingle_words, profile.seed)
    kept = [i for i in range(len(frame)) if i not in reasons]
    texts = frame["text"].tolist()
    sha = file_sha256(accepted_path)
    minhash = np.zeros((len(kept), data.minhash_perms), dtype=np.uint64)
    for row, i in enumerate(kept):
        minhash[row] = signatures.minhash[i] if i in signatures.minhash else hasher.signature(texts[i])
    write_signatures(profile, domain, [texts[i] for i in kept], [signatures.exact[i] for i in kept], minhash, sha)


def _row_reasons(checks: list[Check], results: list[Any], feats: pd.DataFrame) -> dict[int, list[str]]:
    """{row position: quarantine reasons}, one per failed check, naming the input problem or the duplicated id."""
    reasons: dict[int, list[str]] = {}
    for check, res in zip(checks, results, strict=True):
        for pos in _failing_rows(res, feats):
            label = check.reason
            if check.reason.startswith("unreadable"):
                label = f"unreadable input: {feats['problem'].iat[pos]}"
            elif check.reason.endswith("duplicate") or check.reason.startswith("near duplicate"):
                label = f"{check.reason} of {feats['duplicate_of'].iat[pos]}"
            reasons.setdefault(pos, []).append(label)
    return reasons


def _partition(
    frame: pd.DataFrame, feats: pd.DataFrame, reasons: dict[int, list[str]], domain: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accepted documents, quarantine with reasons and source rows); every ingested row lands in exactly one."""
    bad = sorted(reasons)
    quarantine = pd.DataFrame(
        {
            "id": feats["id"].iloc[bad].tolist(),
            "text": feats["text"].iloc[bad].tolist(),
            "reason": ["; ".join(reasons[i]) for i in bad],
            "source_file": feats["source_file"].iloc[bad].tolist(),
            "row": feats["row"].iloc[bad].astype("int64").tolist(),
        },
        columns=QUARANTINE_COLUMNS,
    )
    keep_cols = [c for c in frame.columns if c not in ("problem", "source_file", "row", "redactions")]
    accepted = frame.drop(index=bad)[keep_cols].reset_index(drop=True)
    if len(accepted) + len(quarantine) != len(frame):  # invariant 8: nothing lost
        raise DataError(
            f"domain '{domain}': {len(accepted)} accepted + {len(quarantine)} quarantined != {len(frame)} ingested"
        )
    return accepted, quarantine


def _reason_counts(reasons: dict[int, list[str]]) -> dict[str, int]:
    """Quarantined rows per reason category (the label without its row specifics)."""
    counts: dict[str, int] = {}
    for items in reasons.values():
        for label in items:
            key = label.split(":")[0].split(" of ")[0]
            counts[key] = counts.get(key, 0) + 1
    return counts


def _summary(checks: list[Check], results: list[Any]) -> list[dict[str, Any]]:
    """One JSON-able row per expectation: what it checked, whether it passed and how many rows failed it."""
    return [
        {
            "expectation": type(c.expectation).__name__,
            "column": getattr(c.expectation, "column", None),
            "reason": c.reason,
            "success": bool(r.success),
            "unexpected_count": int(r.result.get("unexpected_count") or 0),
            "unexpected_percent": float(r.result.get("unexpected_percent") or 0.0),
            "observed_value": r.result.get("observed_value"),
        }
        for c, r in zip(checks, results, strict=True)
    ]


def write_report(
    profile: Profile,
    domain: str,
    success: bool,
    ingested: int,
    accepted: int,
    quarantine: pd.DataFrame,
    counts: dict[str, int],
    summary: list[dict[str, Any]],
    rate: float,
) -> Path:
    """A rendered markdown report of the suite (the Data Docs equivalent that survives without a GX file context)."""
    out = RunPaths(profile).data_reports_dir / f"validation-{domain}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Validation report: `{domain}` — {'PASSED' if success else 'FAILED'}",
        "",
        f"Great Expectations suite `flexo-{domain}`; profile `{profile.name}`.",
        "",
        f"- ingested: {ingested}",
        f"- accepted: {accepted}",
        f"- quarantined: {len(quarantine)} ({rate:.1%})",
        f"- accepted + quarantined = ingested: {accepted + len(quarantine) == ingested}",
        "",
        "| expectation | column | passed | unexpected | % | quarantine reason |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['expectation']} | {s['column'] or '(table)'} | {'yes' if s['success'] else '**NO**'} | "
            f"{s['unexpected_count']} | {s['unexpected_percent']:.2f} | {s['reason']} |"
        )
    lines += ["", "## Quarantine by reason", ""] + [f"- {k}: {v}" for k, v in sorted(counts.items())] or ["- none"]
    if len(quarantine):
        lines += ["", "## First quarantined documents", "", "| id | file | row | reason |", "|---|---|---|---|"]
        for rec in quarantine.head(20).itertuples():
            lines.append(f"| {rec.id} | {rec.source_file} | {rec.row} | {str(rec.reason)[:160].replace('|', '/')} |")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
