"""The at-scale prose checks: a licence text, a table of contents, a passage in another language and a page full of
leftover markup are each quarantined with their own reason, English prose is kept, and the counts add up."""

from __future__ import annotations

import random

import pandas as pd

from tasks.data.ingest import ingest, staging_dir
from tasks.data.prose import boilerplate, english_ratio, markup_ratio
from tasks.data.validate import validate
from tests.tasks.data_world import WORDS, folder_domain, with_domains

LICENCE = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software. THE SOFTWARE IS "
    'PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, express or implied. All rights reserved by the authors.'
)
CONTENTS = "\n".join(
    f"{n}. {title} .......... {page}"
    for n, (title, page) in enumerate(
        [
            ("Introduction", 1),
            ("Getting started", 7),
            ("The river", 19),
            ("Stone and water", 33),
            ("Markets", 41),
            ("Winter", 58),
            ("Index", 77),
        ],
        start=1,
    )
)
GERMAN = (
    "Der Fluss fließt langsam durch das alte Dorf, und die Kinder spielen am Ufer zwischen den Steinen. Im Winter "
    "frieren die Wiesen, doch im Sommer blühen die Gärten hinter den Häusern der Bauern und Maler."
)
MARKUP = "".join(
    f'<div class="nav"><a href="page{i}.html">{w}</a></div>&nbsp;&raquo;' for i, w in enumerate(WORDS[:20])
)


def english(rng: random.Random, sentences: int = 6) -> str:
    """Readable English: function words around random nouns, so no two documents near-duplicate."""
    pick = lambda: rng.choice(WORDS)  # noqa: E731
    return " ".join(
        f"The {pick()} of the {pick()} was near a {pick()}, and it is said that they {pick()} with {pick()} "
        f"{rng.randint(0, 10**6)}."
        for _ in range(sentences)
    )


def test_signals() -> None:
    rng = random.Random(0)
    assert english_ratio(english(rng)) > 0.4 > 0.1 > english_ratio(GERMAN)
    assert english_ratio("Zwei Wörter.") == 1.0  # too short to judge
    assert markup_ratio(MARKUP) > 0.5 and markup_ratio(english(rng)) == 0.0
    assert markup_ratio(r"We use \textbf{bold} and <b>tags</b>.") > 0.2
    assert boilerplate(LICENCE) == "licence text" and boilerplate(CONTENTS) == "table of contents"
    assert boilerplate(english(rng)) is None
    long_writing = english(rng, 120) + " " + LICENCE  # a long text that quotes a licence is still writing
    assert len(long_writing) > 8000 and boilerplate(long_writing) is None


def test_each_kind_is_quarantined_with_its_reason(tmp_profile, tmp_path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    rng = random.Random(1)
    for i in range(30):
        (folder / f"good{i:02d}.txt").write_text(english(rng), encoding="utf-8")
    for name, text in {"licence": LICENCE, "contents": CONTENTS, "german": GERMAN, "markup": MARKUP}.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    profile = with_domains(
        tmp_profile,
        {"docs": folder_domain(folder)},
        min_english_ratio=0.2,
        max_markup_ratio=0.05,
        drop_boilerplate=True,
        min_rows=10,
        min_letter_ratio=0.3,
    )
    ingested = ingest(profile, "docs")
    result = validate(profile, "docs")
    quarantine = pd.read_parquet(staging_dir(profile, "docs") / "quarantine.parquet")
    reason = dict(zip(quarantine["id"].str.rsplit("/", n=1).str[-1], quarantine["reason"], strict=True))
    assert set(reason) == {"licence.txt#0", "contents.txt#0", "german.txt#0", "markup.txt#0"}, reason
    assert "boilerplate" in reason["licence.txt#0"] and "boilerplate" in reason["contents.txt#0"]
    assert "not English prose" in reason["german.txt#0"]
    assert "markup residue" in reason["markup.txt#0"]
    assert result.accepted == 30 and result.accepted + result.quarantined == ingested.documents


def test_off_by_default_so_the_demo_keeps_its_data(tmp_profile, tmp_path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "german.txt").write_text(GERMAN, encoding="utf-8")
    profile = with_domains(tmp_profile, {"docs": folder_domain(folder)}, min_rows=1)
    ingest(profile, "docs")
    assert validate(profile, "docs").accepted == 1
