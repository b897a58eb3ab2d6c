"""The academic adapters on fake unpacked Debian packages (no network): Sweave and R Markdown vignettes and LaTeX
manual sources become prose, non-English text is left out, bad bytes become problem documents, budgets hold."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tasks.core.errors import DataError
from tasks.data.sources.debian_academic import (
    R_VIGNETTE_PACKAGES,
    RVignettesAllSource,
    TexliveDocsSource,
    english_ratio,
    rmd_to_text,
)
from tests.tasks.data.fake_packages import fake_debian_package as _package
from tests.tasks.data.fake_packages import source_context as _context

RNW = r"""\documentclass{article}
%\VignetteIndexEntry{Mixture models}
\begin{document}
\section{Introduction}
Finite mixture models are a popular tool for modelling unobserved heterogeneity in the data, and
they are fitted with the EM algorithm \citep{dempster}.
<<fit, echo=TRUE>>=
m <- flexmix(y ~ x, k = 2)
@
The fitted model has two components with different slopes.
\end{document}
"""
RMD = """---
title: "Getting started"
output: rmarkdown::html_vignette
---

# Overview

About 95% of the time the default settings are fine, and this is what the [manual](https://x.org) says.

```{r}
summary(fit)
```

The estimate of `r 1+1` is shown in the table ![plot](a.png) below.
"""
RMD_GERMAN = """# Einleitung

Dieses Paket schätzt gemischte Modelle für die Analyse von Daten mit wiederholten Messungen und
zeigt die Ergebnisse in übersichtlichen Grafiken.
"""


def _vignettes(tmp_path: Path, extra: dict | None = None, **context) -> RVignettesAllSource:
    doc = "usr/lib/R/site-library/flexmix/doc/"
    files = {doc + "mixtures.Rnw": RNW, doc + "start.Rmd": RMD, doc + "einleitung.Rmd": RMD_GERMAN}
    files["usr/lib/R/site-library/flexmix/examples/copy.Rnw"] = RNW  # not an installed vignette
    _package(tmp_path, "r-cran-flexmix", {**files, **(extra or {})})
    return RVignettesAllSource("academic", "owner", {"packages": ["r-cran-flexmix"]}, _context(tmp_path, **context))


def test_r_vignettes_all_reads_sweave_and_markdown_prose(tmp_path):
    docs = {d.id: d for d in _vignettes(tmp_path).documents()}
    assert set(docs) == {"academic/r-cran-flexmix/mixtures.Rnw#0", "academic/r-cran-flexmix/start.Rmd#0"}
    rnw = docs["academic/r-cran-flexmix/mixtures.Rnw#0"].text
    assert rnw.startswith("Introduction\nFinite mixture models are a popular tool")
    assert "flexmix(y" not in rnw and "dempster" not in rnw and "two components" in rnw
    assert docs["academic/r-cran-flexmix/start.Rmd#0"].text == (
        "Overview\n\nAbout 95% of the time the default settings are fine, and this is what the manual says.\n\n"
        "The estimate of is shown in the table below."
    )


def test_r_vignettes_all_bad_bytes_and_budget(tmp_path):
    bad = {"usr/lib/R/site-library/flexmix/doc/latin.Rnw": b"\\section{Caf\xe9} The model is fitted."}
    docs = list(_vignettes(tmp_path, bad).documents())
    problems = [d for d in docs if d.problem]
    assert [d.id for d in problems] == ["academic/r-cran-flexmix/latin.Rnw"] and "0xe9" in problems[0].problem
    assert len(list(_vignettes(tmp_path, bad, max_docs=1).documents())) == 1
    assert len(list(_vignettes(tmp_path, bad, target_bytes=1).documents())) == 1


def test_r_vignettes_all_pinned_list_and_origins(tmp_path):
    assert len(R_VIGNETTE_PACKAGES) > 400 and len(set(R_VIGNETTE_PACKAGES)) == len(R_VIGNETTE_PACKAGES)
    assert {"r-cran-zoo", "r-cran-flexmix", "r-cran-survival"} <= set(R_VIGNETTE_PACKAGES)
    source = RVignettesAllSource("academic", "o", {}, _context(tmp_path))
    assert source.origins() == {f"debian:{p}" for p in R_VIGNETTE_PACKAGES}
    order = source.package_list()
    assert sorted(order) == sorted(R_VIGNETTE_PACKAGES) and order != list(R_VIGNETTE_PACKAGES)
    assert order == RVignettesAllSource("academic", "o", {}, _context(tmp_path)).package_list()


MANUAL = r"""\documentclass{ltxdoc}
\begin{document}
\section{Introduction}
The \textsf{chemnum} package numbers the compounds of a chemistry paper and keeps the numbers in step with
the order in which they are first mentioned in the text.
\begin{tikzpicture}
\draw (0,0) -- (1,1) node {A};
\end{tikzpicture}
\begin{lstlisting}
\cmpd{benzene}
\end{lstlisting}
It is an alternative to the older package that did the same for the whole document.
\end{document}
"""


def _texlive(tmp_path: Path, **context) -> TexliveDocsSource:
    root = "usr/share/doc/texlive-doc/latex/"
    _package(
        tmp_path,
        "texlive-science-doc",
        {
            root + "chemnum/chemnum.tex.gz": gzip.compress(MANUAL.encode("utf-8")),
            root + "broken/broken.tex.gz": b"not gzip at all",
            root + "latin/latin.tex": "\\section{Caf\xe9} is a word of the text of this manual.".encode("latin-1"),
            root + "deutsch/deutsch.tex": "Dieses Paket setzt chemische Formeln und nummeriert die Verbindungen.",
            root + "chemnum/chemnum.pdf": b"%PDF-1.5",
        },
    )
    _package(tmp_path, "texlive-humanities-doc", {root + "poem/poem.tex": MANUAL.replace("chemnum", "poem")})
    return TexliveDocsSource("academic", "owner", {}, _context(tmp_path, **context))


def test_texlive_docs_reads_manual_prose_and_names_bad_files(tmp_path):
    docs = list(_texlive(tmp_path).documents())
    by_id = {d.id: d for d in docs}
    assert list(by_id) == [
        "academic/texlive-science-doc/latex/broken/broken.tex.gz",
        "academic/texlive-science-doc/latex/chemnum/chemnum.tex.gz#0",
        "academic/texlive-science-doc/latex/latin/latin.tex",
        "academic/texlive-humanities-doc/latex/poem/poem.tex#0",
    ]
    assert "gzip" in by_id["academic/texlive-science-doc/latex/broken/broken.tex.gz"].problem
    assert "not UTF-8" in by_id["academic/texlive-science-doc/latex/latin/latin.tex"].problem
    text = by_id["academic/texlive-science-doc/latex/chemnum/chemnum.tex.gz#0"].text
    assert text.startswith("Introduction\nThe chemnum package numbers the compounds")
    assert "draw" not in text and "cmpd" not in text and "It is an alternative" in text
    source = _texlive(tmp_path, max_docs=2)
    assert len(list(source.documents())) == 2
    assert source.origins() == {"debian:texlive-science-doc", "debian:texlive-humanities-doc"}


def test_texlive_docs_missing_layout_is_a_data_error(tmp_path):
    _package(tmp_path, "texlive-science-doc", {"usr/share/doc/texlive-science-doc/copyright": "LPPL"})
    source = TexliveDocsSource("academic", "o", {"packages": ["texlive-science-doc"]}, _context(tmp_path))
    with pytest.raises(DataError, match="texlive-science-doc"):
        list(source.documents())


def test_english_check_and_markdown_cleaner():
    assert english_ratio(rmd_to_text(RMD)) > 0.12 > english_ratio(RMD_GERMAN)
    assert rmd_to_text("---\na: 1\n---\nText [@smith2020] here.\n") == "Text here."
