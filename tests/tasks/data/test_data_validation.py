"""GX validation with quarantine: every bad input ends quarantined with its reason, counts add up, a failing suite
stops the domain with a report path, and domain-specific checks (code parses, math has an answer) bite."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest

from tasks.core.errors import DataError
from tasks.data.ingest import ingest, staging_dir
from tasks.data.pipeline import build_domain
from tasks.data.validate import validate
from tests.tasks.data_world import folder_domain, prose, with_domains, write_jsonl, write_parquet, write_txt_folder


@pytest.fixture
def messy(tmp_profile, tmp_path):
    """A folder domain with 40 good documents and one of each bad kind."""
    folder = tmp_path / "mine"
    texts = write_txt_folder(folder, 40, seed=3)
    (folder / "latin1.txt").write_bytes(
        "naïve café text written in latin-1 encoding, long enough ".encode("latin-1") * 3
    )
    (folder / "nul.txt").write_bytes(b"a document with a NUL \x00 byte inside it, long enough to pass length " * 2)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "dup.txt").write_text(texts[5] + "\n", encoding="utf-8")
    (folder / "near.txt").write_text(texts[7].replace(".", " river.") + "\n", encoding="utf-8")
    (folder / "pii.txt").write_text(
        prose(random.Random(9)) + " Mail jane.doe@example.org or call 555-867-5309.\n", encoding="utf-8"
    )
    (folder / "short.txt").write_text("Too short.\n", encoding="utf-8")
    with open(folder / "lines.txt", "wb") as fh:  # a 50 MB single line between two good ones
        fh.write((prose(random.Random(11)) + "\n").encode())
        fh.write(b"y" * (50 * 1024 * 1024) + b"\n")
    return with_domains(tmp_profile, {"mine": folder_domain(folder)})


def test_every_bad_document_is_quarantined_with_reason_and_counts_add_up(messy):
    ingested = ingest(messy, "mine")
    result = validate(messy, "mine")
    quarantine = pd.read_parquet(staging_dir(messy, "mine") / "quarantine.parquet")
    accepted = pd.read_parquet(staging_dir(messy, "mine") / "accepted.parquet")
    assert result.success
    assert len(accepted) + len(quarantine) == ingested.documents == result.ingested  # invariant 8
    assert set(accepted["id"]).isdisjoint(quarantine["id"])
    reason = dict(zip(quarantine["id"].str.rsplit("/", n=1).str[-1], quarantine["reason"], strict=True))
    assert "not UTF-8: invalid byte 0xef" in reason["latin1.txt#0"] and "latin1.txt row 0" in reason["latin1.txt#0"]
    assert "NUL byte" in reason["nul.txt#0"]
    assert "empty file" in reason["empty.txt#0"]
    assert "exact duplicate of mine/doc005.txt#0" in reason["dup.txt#0"]
    assert "near duplicate" in reason["near.txt#0"] and "doc007.txt" in reason["near.txt#0"]
    assert "PII pattern" in reason["pii.txt#0"]
    assert "length outside" in reason["short.txt#0"]
    assert "too large" in reason["lines.txt#0"] and "lines.txt row 0" in reason["lines.txt#0"]  # file mode: one doc
    assert (quarantine["source_file"].str.len() > 0).all() and "row" in quarantine.columns
    assert len(accepted) == 40 and len(quarantine) == 8


def test_failing_suite_stops_the_domain_with_a_report(tmp_profile, tmp_path):
    folder = tmp_path / "bad"
    write_txt_folder(folder, 10, seed=1)
    for i in range(12):
        (folder / f"x{i}.txt").write_bytes(b"\xff\xfe broken bytes " * 10)
    p = with_domains(tmp_profile, {"bad": folder_domain(folder)}, min_rows=5)
    ingest(p, "bad")
    with pytest.raises(
        DataError, match=r"domain 'bad' failed its validation suite.*Report: .*validation-bad.md"
    ) as err:
        validate(p, "bad")
    report = str(err.value).rsplit("Report: ", 1)[1]
    text = open(report, encoding="utf-8").read()
    assert "FAILED" in text and "ExpectColumnValuesToBeNull" in text
    q = pd.read_parquet(staging_dir(p, "bad") / "quarantine.parquet")  # quarantine written even on failure
    assert len(q) == 12


def test_row_count_bounds_fail_a_too_small_domain(tmp_profile, tmp_path):
    folder = tmp_path / "small"
    write_txt_folder(folder, 5)
    p = with_domains(tmp_profile, {"small": folder_domain(folder)}, min_rows=20)
    ingest(p, "small")
    with pytest.raises(DataError, match=r"row count outside \[20, "):
        validate(p, "small")


def test_code_must_parse_and_math_needs_an_answer(tmp_profile, tmp_path):
    code = tmp_path / "code_src"
    code.mkdir()
    rng = random.Random(2)
    for i in range(24):
        name = "_".join(rng.choice(["load", "parse", "merge", "split", "count", "scale"]) for _ in range(3))
        (code / f"f{i}.txt").write_text(
            f'def {name}_{i}(values, factor={i}):\n    """Scale and sum."""\n'
            f"    return sum(v * factor for v in values) + {i}\n",
            encoding="utf-8",
        )
    (code / "broken.txt").write_text("def broken(:\n    return 1 +\n" * 3, encoding="utf-8")
    math = tmp_path / "math_src"
    items = [{"question": f"What is {i} plus {i + 1}?", "answer": str(2 * i + 1)} for i in range(24)]
    items.append({"question": "What is nothing?", "answer": ""})
    write_jsonl(math / "items.jsonl", [{"text": f"{r['question']}\n{r['answer']}", **r} for r in items])
    p = with_domains(
        tmp_profile,
        {
            "code": folder_domain(code).model_copy(update={"min_letter_ratio": 0.3}),
            "math": folder_domain(math, extra_fields=["question", "answer"]).model_copy(
                update={"min_chars": 8, "min_letter_ratio": 0.0}
            ),
        },
        min_rows=10,
    )
    for d in ("code", "math"):
        ingest(p, d)
    code_result, math_result = validate(p, "code"), validate(p, "math")
    q_code = pd.read_parquet(staging_dir(p, "code") / "quarantine.parquet")
    q_math = pd.read_parquet(staging_dir(p, "math") / "quarantine.parquet")
    assert list(q_code["id"]) == ["code/broken.txt#0"] and "does not parse as Python" in q_code["reason"][0]
    assert list(q_math["id"]) == ["math/items.jsonl#24"] and "math item with empty answer" in q_math["reason"][0]
    assert code_result.accepted == 24 and math_result.accepted == 24


def test_user_domain_from_params_yaml_builds_without_code(tmp_path, monkeypatch):
    """A data owner adds `mine` to params.yaml (folder adapter) and builds it: no Python written."""
    import yaml

    from tasks.core.config import REPO_ROOT, load_profile

    folder = tmp_path / "my_texts"
    write_txt_folder(folder, 60, seed=4)
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["domains"]["mine"] = {
        "owner": "me",
        "source": {"adapter": "folder", "options": {"path": str(folder), "license": "CC-BY-4.0"}},
    }
    raw["profiles"]["tiny"]["paths"] = {
        "data_dir": str(tmp_path / "data"),
        "runs_dir": str(tmp_path / "runs"),
        "reports_dir": str(tmp_path / "reports"),
    }
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    profile = load_profile("tiny", params)
    built = build_domain(profile, "mine")
    assert built.ingested == 60 and built.accepted == 60 and built.quarantined == 0
    assert sum(built.splits.values()) == 60 and built.splits["test"] >= 1 and built.data_hash.endswith(".dir")
    prov = json.loads((staging_dir(profile, "mine") / "provenance.json").read_text())
    assert prov["license"] == "CC-BY-4.0" and prov["owner"] == "me"


def test_pii_is_redacted_at_ingest_when_configured(tmp_profile, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "a.txt").write_text(
        "Write to someone@example.com or 555-867-5309, card 4111 1111 1111 1111 please.\n", encoding="utf-8"
    )
    p = with_domains(tmp_profile, {"mine": folder_domain(folder, redact_pii=True)})
    ingest(p, "mine")
    frame = pd.read_parquet(staging_dir(p, "mine") / "ingested.parquet")
    assert frame["text"][0] == "Write to <EMAIL> or <PHONE>, card <CARD> please.\n" and frame["redactions"][0] == 3


def test_parquet_rows_with_nul_are_quarantined_with_row(tmp_profile, tmp_path):
    folder = tmp_path / "mine"
    texts = [prose(random.Random(i)) for i in range(25)] + ["bad \x00 row " * 10]
    write_parquet(folder / "docs.parquet", pd.DataFrame({"text": texts}))
    p = with_domains(tmp_profile, {"mine": folder_domain(folder)})
    ingest(p, "mine")
    validate(p, "mine")
    q = pd.read_parquet(staging_dir(p, "mine") / "quarantine.parquet")
    assert list(q["row"]) == [25] and "docs.parquet row 25" in q["reason"][0]


def test_character_ratios_equal_their_definitions_on_any_text():
    """The table lookups count what str.isalpha/isspace and the Unicode categories say, character by character."""
    import unicodedata

    from tasks.data.validate import _letter_ratio, _printable_ratio

    rng = random.Random(0)
    picks = (
        lambda: rng.randint(0, 0x10FFFF),
        lambda: rng.randint(32, 126),
        lambda: rng.choice([0, 9, 10, 0xE000, 0xD800]),
    )
    for _ in range(200):
        text = "".join(chr(rng.choice(picks)()) for _ in range(rng.randint(0, 300)))
        letters = sum(ch.isalpha() or ch.isspace() for ch in text)
        bad = sum(ch not in "\n\t\r" and unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") for ch in text)
        assert _letter_ratio(text) == letters / max(len(text), 1)
        assert _printable_ratio(text) == 1.0 - bad / max(len(text), 1)
