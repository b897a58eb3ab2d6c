"""Source adapters: the folder adapter (a user's own domain), each bad input, and the real built-in sources."""

from __future__ import annotations

import io
import pickle
import random
from pathlib import Path

import pandas as pd
import pytest

from tasks.core.errors import ConfigError, DataError
from tasks.data.ingest import ingest
from tasks.data.sources import adapter_names, get_source
from tasks.data.sources.fetch import cache_root
from tests.tasks.data_world import folder_domain, prose, with_domains, write_jsonl, write_parquet, write_txt_folder

FIFTY_MB = 50 * 1024 * 1024


def _docs(profile, domain="mine"):
    return list(get_source(profile, domain).documents())


def test_registry_lists_every_builtin_adapter():
    assert {
        "folder",
        "stdlib_code",
        "math_dataset",
        "lee_news",
        "newsgroups",
        "python_docs",
        "fortunes",
        "r_vignettes",
        "public_mix",
    } <= set(adapter_names())


def test_unknown_adapter_is_a_config_error(tmp_profile, tmp_path):
    bad = folder_domain(tmp_path).model_copy(
        update={"source": folder_domain(tmp_path).source.model_copy(update={"adapter": "nope"})}
    )
    with pytest.raises(ConfigError, match="domains.mine.source.adapter"):
        get_source(with_domains(tmp_profile, {"mine": bad}), "mine")


def test_folder_reads_txt_jsonl_parquet_with_extra_columns(tmp_profile, tmp_path):
    folder = tmp_path / "mine"
    write_txt_folder(folder / "txt", 3)
    write_jsonl(folder / "items.jsonl", [{"text": "What is 2+2?\n4", "question": "What is 2+2?", "answer": "4"}])
    write_parquet(
        folder / "more.parquet", pd.DataFrame({"text": ["a parquet document"], "question": ["q"], "answer": ["a"]})
    )
    p = with_domains(tmp_profile, {"mine": folder_domain(folder, extra_fields=["question", "answer"])})
    docs = _docs(p)
    assert len(docs) == 5 and not any(d.problem for d in docs)
    by_file = {Path(d.source_file).name: d for d in docs}
    assert by_file["items.jsonl"].meta == {"question": "What is 2+2?", "answer": "4"}
    assert by_file["more.parquet"].text == "a parquet document"
    assert len({d.id for d in docs}) == 5


@pytest.mark.parametrize(
    "name,payload,expected",
    [
        ("latin1.txt", "café au lait ".encode("latin-1") * 20, r"not UTF-8: invalid byte 0xe9 at offset 3"),
        ("nul.txt", b"text with a \x00 NUL byte " * 10, r"NUL byte at offset 12"),
        ("empty.txt", b"", r"empty file"),
    ],
)
def test_bad_bytes_raise_dataerror_naming_file_and_row_in_error_mode(tmp_profile, tmp_path, name, payload, expected):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / name).write_bytes(payload)
    p = with_domains(tmp_profile, {"mine": folder_domain(folder)}, on_bad_input="error")
    with pytest.raises(DataError, match=expected) as err:
        ingest(p, "mine")
    assert str(folder / name) in str(err.value) and "row 0" in str(err.value)


def test_fifty_megabyte_single_line_is_flagged_without_loading_it(tmp_profile, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    with open(folder / "huge.txt", "wb") as fh:
        fh.write(b"short first line that is fine and long enough to count as a document\n")
        fh.write(b"x" * FIFTY_MB + b"\n")
        fh.write(b"a normal third line after the giant one, also long enough to be a document\n")
    p = with_domains(tmp_profile, {"mine": folder_domain(folder, txt_mode="line")})
    docs = _docs(p)
    assert [d.row for d in docs] == [0, 1, 2]
    big = docs[1]
    assert big.problem and f"line of {FIFTY_MB + 1} bytes" in big.problem and "huge.txt row 1" in big.problem
    assert len(big.text) <= 200  # only a preview is kept
    assert docs[0].problem is None and docs[2].problem is None
    with pytest.raises(DataError, match=r"huge.txt row 1"):
        ingest(with_domains(p, dict(p.domains), on_bad_input="error"), "mine")


def test_truncated_parquet_is_a_dataerror_naming_the_file(tmp_profile, tmp_path):
    folder = tmp_path / "mine"
    write_parquet(folder / "full.parquet", pd.DataFrame({"text": [prose(random.Random(1)) for _ in range(50)]}))
    raw = (folder / "full.parquet").read_bytes()
    (folder / "full.parquet").write_bytes(raw[: len(raw) // 2])
    p = with_domains(tmp_profile, {"mine": folder_domain(folder)})
    with pytest.raises(DataError, match=r"full.parquet.*truncated"):
        _docs(p)


def test_wrong_columns_are_a_dataerror_naming_file_and_columns(tmp_profile, tmp_path):
    folder = tmp_path / "mine"
    write_parquet(folder / "wrong.parquet", pd.DataFrame({"body": ["some text"], "title": ["t"]}))
    p = with_domains(tmp_profile, {"mine": folder_domain(folder)})
    with pytest.raises(
        DataError, match=r"wrong.parquet: missing column\(s\) \['text'\]; found columns \['body', 'title'\]"
    ):
        _docs(p)


def test_jsonl_row_problems_name_the_row(tmp_profile, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "rows.jsonl").write_text(
        '{"text": "fine row of text"}\n{"body": "no text key"}\n{not json}\n', encoding="utf-8"
    )
    docs = _docs(with_domains(tmp_profile, {"mine": folder_domain(folder)}))
    assert docs[0].problem is None
    assert "no string field 'text'" in docs[1].problem and "rows.jsonl row 1" in docs[1].problem
    assert "invalid JSON" in docs[2].problem and "rows.jsonl row 2" in docs[2].problem


def test_stdlib_code_documents_are_python_definitions(tmp_profile):
    import ast

    p = tmp_profile.model_copy(update={"data": tmp_profile.data.model_copy(update={"target_bytes_per_domain": 20000})})
    docs = _docs(p, "code")
    assert docs and sum(len(d.text) for d in docs) >= 20000
    for d in docs:
        ast.parse(d.text)
        assert d.text.lstrip().startswith(("def ", "class ", "@", "async def "))


def test_math_items_are_deterministic_with_question_and_answer(tmp_profile):
    p = tmp_profile.model_copy(update={"data": tmp_profile.data.model_copy(update={"target_bytes_per_domain": 3000})})
    first, second = _docs(p, "math"), _docs(p, "math")
    assert [d.text for d in first] == [d.text for d in second]
    for d in first:
        assert d.meta["question"] and d.meta["answer"] and d.text == f"{d.meta['question']}\n{d.meta['answer']}"


def test_newsgroups_unpickler_refuses_foreign_globals():
    from tasks.data.sources.gensim_corpora import _BunchUnpickler

    evil = b"cos\nsystem\n(S'echo hacked'\ntR."
    with pytest.raises(DataError, match="refusing to load global os.system"):
        _BunchUnpickler(io.BytesIO(evil)).load()
    assert pickle  # the standard unpickler is never used on this data


def _cached(kind: str, name: str) -> bool:
    root = cache_root(tmp_default := "~/.cache/flexo/sources")
    del tmp_default
    return any((root / kind).glob(name)) if (root / kind).exists() else False


@pytest.mark.parametrize(
    "domain,adapter,needs",
    [
        ("news", "lee_news", ("extracted", "gensim-4.4.0*")),
        ("reddit", "newsgroups", ("extracted", "gensim-4.4.0*")),
        ("educational", "python_docs", ("debian", "python3.11-doc")),
        ("creative", "fortunes", ("debian", "fortunes-min")),
        ("academic", "r_vignettes", ("debian", "r-cran-zoo")),
    ],
)
def test_downloaded_sources_give_real_text(tmp_profile, domain, adapter, needs):
    if not _cached(*needs):
        pytest.skip(f"{needs[1]} is not in ~/.cache/flexo/sources (run `flexo data` once online to fetch it)")
    assert tmp_profile.domains[domain].source.adapter == adapter
    docs = _docs(tmp_profile, domain)
    good = [d for d in docs if not d.problem]
    assert len(good) >= 10
    assert sum(len(d.text) for d in docs) >= tmp_profile.data.target_bytes_per_domain * 0.9 or len(docs) < 400
    assert all(len({d.id for d in docs}) == len(docs) for _ in [0])
