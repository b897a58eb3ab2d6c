"""Academic domain text at scale from Debian packages: every R package vignette in bookworm main (`r_vignettes_all`,
mostly papers and technical reports about statistical methods) and the LaTeX sources of the science and humanities
package manuals of TeX Live (`texlive_docs`).

Why: the demo's 20 vignette packages hold ~1.5 MB; the 10 MB scale needs the whole set. The package list is pinned
here (found by listing each r-cran-* .deb of bookworm for installed .Rnw/.Rmd vignettes), so a build is reproducible.
"""

from __future__ import annotations

import gzip
import random
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from tasks.core.errors import DataError
from tasks.data.sources import Document, register
from tasks.data.sources.debian_docs import DebianSource, RVignettesSource, latex_to_text
from tasks.data.sources.fetch import debian_package

# bookworm r-cran-* packages (without the prefix) that install at least one .Rnw/.Rmd vignette under lib/R/*/doc.
R_VIGNETTE_PACKAGES = tuple(
    f"r-cran-{name}"
    for name in """
    actuar adegraphics adephylo aer afex airr alakazam amap amelia apcluster ape argparse arsenal aweek base64url
    batchtools bayesfactor bayesm bayesplot bayestestr bbmle bdgraph benchmarkme bio3d biocmanager bit bms
    bradleyterry2 brglm2 bridgesampling brms brobdingnag broom calibrate car caret cellranger cgdsr checkmate
    circlize classint clipr clock clubsandwich clue cmdfun cmstatr coarsedatatools coin collapse colorspace
    corrplot covr cowplot cpp11 credentials crul ctmcd cubature curl cutpointr cvar data.table datawizard dbi
    dbitest dbplyr dbscan dendextend dendsort desolve devtools diffobj dimred diptest distr domc doparallel dorng
    dosefinding dplyr dqrng drr dt dtplyr e1071 ecodist ecosolver effects effectsize egg ei elliptic emmeans
    enrichwith epiestim epir erm etm evd expint expm factominer fansi fauxpas filehash fitbitscraper fitdistrplus
    flexmix flextable forcats foreach forecast formatr formattable formula fs g.data gargle gbm gbutils gclus gdata
    geepack genoplotr geoknife geometry geosphere gert getoptlong ggalluvial gganimate ggbeeswarm ggdendro
    ggeffects ggfortify ggplot2 ggraph ggrastr ggrepel ggridges ggsci ggseqlogo ggsignif ggtext gh gitcreds glmmtmb
    glmnet globaloptions glue gnm googledrive googlevis goplot gower gplots gprofiler2 gridbase gridextra gridsvg
    gsl gstat gsubfn gtable guerry gunifrac gwidgets haplo.stats hardhat haven hdf5r heatmaply here hexbin highr
    hsaur3 htmltable htmlwidgets httr httr2 huge hunspell hwriter hypergeo ids incidence insight interp intervals
    ipred irace irlba iso isoband iterators jinjar jsonlite kedd kernlab knitr ks kutils laeken lasso2 later lava
    lazyeval lbfgsb3c learnbayes leiden leidenbase lhs libcoin lifecycle lintr lme4 lmtest logcondens logger loo
    lubridate magic magick magrittr maldiquant maldiquantforeign manipulatewidgets maptools markdown markovchain
    matchit matrix maxlik maxstat mclust mcmc mediana mertools metamix metap mets mi mitml mitools mixsqp mixtools
    mlmrev mlr mnp mockery mockr multcomp mutoss mvnfast mvtnorm nanotime natserv ncdfgeom network nloptr nmf
    openmx openssl openxlsx optimx ordinal pan pander parameters parsetools partitions party partykit patchwork
    pbdzmq permute phangorn phylobase pillar pkgdown plm pls poissonbinomial polycub polynom poorman popepi
    posterior powerlaw projpred promises prophet proto proxy pscl psych psychotools psychotree psychtools purrr pwr
    qlcmatrix qqconf qqman qtl ratelimitr rcdk rcmdr rcpp rcppannoy rcpparmadillo rcppdist rcppeigen rcppgsl rcppml
    rcppmlpack rdbnomics rdflib rdpack readr readxl recipes redland registry regsem remotes rentrez reprex
    reticulate rex rgdal rgenoud rgl rhandsontable rjson rmarkdown rmpfr rnexml robustbase rockchalk rocr rodbc
    rotl roxygen2 rpact rpart rpf rprojroot rprotobuf rrcov rsample rsdmx rslurm rspectra rsqlite rstan rstanarm
    rstantools rstudioapi rsvg rtdists rtweet runit rvest sandwich sass satellite scatterd3 scatterplot3d semtools
    sendmailr seriation seroincidence sets sf sftime shape shazam shinyjs shinystan sitmo sjlabelled sjmisc sjplot
    skimr slider smcfcs snakecase solrium sp spacetime spam sparsem spatialreg spatstat spdep splines2 squarem
    stablelearner stanheaders stars stringdist stringr strucchange surveillance survey survival survminer survmisc
    susier svglite svmisc svunit systemfit systemfonts tcr testthat textshaping tgp th.data tibble tidyr tidyselect
    tidytext tidyverse tigger tikzdevice timeseries tinytest tm tmvtnorm tokenizers treescape treespace triebeard
    tsp unitizer units upsetr urltools uroot utf8 v8 vcd vcdextra vcr vctrs vegan vim vioplot vipor viridis vroom
    warp wikipedir wikitaxa withr worrms xfun xml2 xtable xts zeallot zoo
""".split()
)
# Share of words that must be common English function words for a text to count as English (German, French or
# Japanese manuals score far below; English prose scores 0.2-0.35).
ENGLISH_MIN_RATIO = 0.12
_ENGLISH_WORDS = frozenset(
    "the of and to in is that for it as with be on are this by an or from which can we not at if these has have"
    " its a was were will their than when also".split()
)


def english_ratio(text: str) -> float:
    """Share of the words of `text` that are common English function words (a cheap language check)."""
    words = re.findall(r"[A-Za-z]+", text.lower())
    return sum(w in _ENGLISH_WORDS for w in words) / len(words) if words else 0.0


def rmd_to_text(source: str) -> str:
    """Prose of an R Markdown vignette: YAML header, code chunks, inline R, HTML comments and tags, images and
    link targets removed; `$...$` formulas kept as written."""
    text = re.sub(r"\A---\n.*?\n---\n", "", source, flags=re.S)
    text = re.sub(r"^\s*(```|~~~).*?^\s*\1[^\n]*$", "", text, flags=re.S | re.M)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"`r [^`]*`", "", text)
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"</?[A-Za-z][^>]*>", "", text)
    text = re.sub(r"^#+\s*", "", text, flags=re.M)
    text = re.sub(r"\[@[^\]]*\]|@\w+", "", text)  # pandoc citations
    text = text.replace("`", "").replace("**", "")
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n[ \t]+", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _english(clean: Callable[[str], str], min_ratio: float) -> Callable[[str], str]:
    """`clean`, then nothing left where the result is not English (a document that yields no pieces)."""

    def run(text: str) -> str:
        out = clean(text)
        return out if english_ratio(out) >= min_ratio else ""

    return run


@register("r_vignettes_all")
class RVignettesAllSource(RVignettesSource):
    license = (
        "per package, mostly GPL-2/GPL-2+/GPL-3 (~65%) and MIT/Expat (~19%), also Apache-2.0, AGPL-3, LGPL, BSD "
        "(Debian r-cran-* packages; see each copyright file)"
    )
    description = (
        "R package vignettes of all bookworm r-cran-* packages that ship them: papers (many Journal of Statistical "
        "Software / R Journal articles), tutorials and method notes; Sweave LaTeX and R Markdown with code chunks "
        "and markup removed; non-English vignettes left out"
    )
    packages = R_VIGNETTE_PACKAGES

    def package_list(self) -> list[str]:
        """The packages in a seeded random order: a budget smaller than the whole set samples all fields of
        statistics, not the alphabet's first letters (and downloads only what it reads)."""
        packages = super().package_list()
        random.Random(self.context.seed).shuffle(packages)
        return packages

    def documents(self) -> Iterator[Document]:
        ratio = float(self.options.get("english_min_ratio", ENGLISH_MIN_RATIO))
        cleaners = {".Rnw": _english(latex_to_text, ratio), ".Rmd": _english(rmd_to_text, ratio)}
        yield from self.budgeted(
            piece
            for key, path in self._vignettes()
            for piece in self.text_pieces(key, path.read_bytes(), str(path), 0, cleaners[path.suffix])
        )


TEXLIVE_DOC_ROOT = "usr/share/doc/texlive-doc"
# Environments of LaTeX manuals that hold code, drawings or typeset examples rather than prose.
TEXLIVE_CODE_ENVS = (
    "tikzpicture|lstlisting|verbatim|Verbatim|LTXexample|example|code|minted|sourcecode|macrocode|tcblisting|"
    "codeexample|latexcode|dispExample|docspec|pgfpicture|circuitikz|chemfig|scheme|align|equation|tabular|tabularx"
)
# A paragraph whose characters are less than this share letters and spaces is leftover code, not prose.
PROSE_MIN_LETTER_RATIO = 0.75


def tex_manual_to_text(source: str) -> str:
    """Prose of a LaTeX package manual: code/drawing/example environments dropped, then `latex_to_text`, then
    paragraphs that are mostly symbols (leftover macro code) dropped."""
    text = re.sub(rf"\\begin\{{({TEXLIVE_CODE_ENVS})\*?\}}.*?\\end\{{\1\*?\}}", "", source, flags=re.S)
    paragraphs = re.split(r"\n\s*\n", latex_to_text(text))
    return "\n\n".join(p for p in paragraphs if _letter_ratio(p) >= PROSE_MIN_LETTER_RATIO)


def _letter_ratio(text: str) -> float:
    return sum(c.isalpha() or c.isspace() for c in text) / len(text) if text else 0.0


@register("texlive_docs")
class TexliveDocsSource(DebianSource):
    license = "free licenses per TeX Live package, mostly LPPL-1.3c (texlive-*-doc; the copyright file lists each)"
    description = (
        "English LaTeX sources of the manuals of TeX Live's science and humanities packages (typesetting of "
        "chemistry, physics, linguistics, critical editions, ...), markup and examples removed: package manuals, "
        "not papers; the PDF-only manuals are not read"
    )
    packages = ("texlive-science-doc", "texlive-humanities-doc")

    def documents(self) -> Iterator[Document]:
        clean = _english(tex_manual_to_text, float(self.options.get("english_min_ratio", ENGLISH_MIN_RATIO)))
        yield from self.budgeted(self._pieces(clean))

    def _pieces(self, clean: Callable[[str], str]) -> Iterator[tuple[Document, int]]:
        for package in self.package_list():
            root = debian_package(self.context.cache_dir, package) / TEXLIVE_DOC_ROOT
            files = sorted(p for p in root.rglob("*") if p.name.endswith((".tex", ".tex.gz")) and p.is_file())
            if not files:
                raise DataError(f"{root}: no .tex manuals in {package}; package layout changed")
            for path in files:
                key = f"{package}/{path.relative_to(root).as_posix()}"
                raw = _read_maybe_gzip(path)
                if isinstance(raw, str):
                    yield Document(f"{self.domain}/{key}", "", str(path), 0, problem=raw), 0
                else:
                    yield from self.text_pieces(key, raw, str(path), 0, clean)


def _read_maybe_gzip(path: Path) -> bytes | str:
    """The file's bytes (gunzipped for .gz), or a problem message when the gzip stream is broken."""
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        return f"not a readable gzip file: {err} ({path})"
