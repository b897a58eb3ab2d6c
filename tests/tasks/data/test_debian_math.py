"""The math adapters on fake unpacked Debian packages (no network): set.mm comments become Unicode prose, manuals
lose their code and navigation, bad bytes become problem documents, budgets are honoured."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.errors import DataError
from tasks.data.sources.debian_math import MathManualsSource, MetamathSource, html_to_text, pari_tex_to_text
from tests.tasks.data.fake_packages import fake_debian_package as _package
from tests.tasks.data.fake_packages import source_context as _context

SET_MM = r"""$( set.mm excerpt $)
$(
#*#*#*#*#*#*#*#*#*#*#*#*#*#*#*#*#*#*#*#*#
                 Propositional calculus
#*#*#*#*#*#*#*#*#*#*#*#*#*#*#*#*#*#*#*#*#

  Here we build logic from two axioms.
$)
  $c ( ) -> wff |- $.
  $( $j syntax 'wff'; $)
  $( Axiom _Simp_.  If ` ph ` is true, then ` ( ps -> ph ) ` is true; see
     ~ ax-2 for the other axiom.  (Contributed by NM, 30-Sep-1992.) $)
  ax-1 $a |- ( ph -> ( ps -> ph ) ) $.
$(
=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=
                 Negation
=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=-=
$)
  $( A double ``negation'' theorem.  (Proof shortened by Wolf Lammen,
     5-Jan-2013.) $)
  notnot $p |- ( ph -> -. -. ph ) $= ( wn ) ABBC $.
$( $t
/* typesetting table */
htmldef "->" as " <IMG SRC='to.gif'> ";
  althtmldef "->" as " &rarr; ";
  althtmldef "ph" as '<SPAN CLASS=wff STYLE="color:blue">&#x1D711;</SPAN>';
  althtmldef "ps" as '<SPAN CLASS=wff>' +
    '&#x1D713;</SPAN>';
$)
"""


def _metamath(tmp_path: Path, body: bytes | str = SET_MM, **context) -> MetamathSource:
    _package(tmp_path, "metamath-databases", {"usr/share/metamath/databases/set.mm": body})
    return MetamathSource("math", "owner", {}, _context(tmp_path, **context))


def test_metamath_keeps_comment_prose_with_unicode_formulas(tmp_path):
    docs = list(_metamath(tmp_path).documents())
    assert [d.id for d in docs] == ["math/set.mm/00000#0", "math/set.mm/00001#0", "math/set.mm/00002#0"]
    assert not any(d.problem for d in docs)
    logic = docs[1].text
    assert logic.startswith("Propositional calculus\n\nHere we build logic from two axioms.")
    assert "If 𝜑 is true, then ( 𝜓 → 𝜑 ) is true; see ax-2 for the other axiom." in logic
    assert "Contributed" not in logic and "$a" not in logic and "syntax" not in logic
    assert docs[2].text == "Negation\n\nA double `negation'' theorem."
    assert "htmldef" not in "".join(d.text for d in docs)


def test_metamath_bad_bytes_become_a_problem_document(tmp_path):
    body = SET_MM.encode("utf-8").replace(b"A double", b"A \xff double")
    docs = list(_metamath(tmp_path, body).documents())
    bad = [d for d in docs if d.problem]
    assert len(bad) == 1 and "not UTF-8" in bad[0].problem and bad[0].id == "math/set.mm/00002"
    assert len(docs) == 3


def test_metamath_budget_origin_and_provenance(tmp_path):
    source = _metamath(tmp_path, max_docs=2)
    assert len(list(source.documents())) == 2
    assert len(list(_metamath(tmp_path, target_bytes=1).documents())) == 1
    assert source.origins() == {"debian:metamath-databases"}
    assert source.provenance()["debian_packages"] == {"metamath-databases": "metamath-databases_1.0-1_all.deb"}


def test_metamath_missing_file_is_a_data_error(tmp_path):
    _package(tmp_path, "metamath-databases", {"usr/share/doc/metamath-databases/copyright": "CC0"})
    with pytest.raises(DataError, match="set.mm"):
        list(MetamathSource("math", "o", {}, _context(tmp_path)).documents())


GAP_PAGE = """<html><head><title>GAP (ref) - Chapter 1</title><script>x()</script></head><body>
<div class="chlinktop"><a href="chap0.html">Top</a></div>
<p id="mathjaxlink" class="pcenter"><a href="chap1_mj.html">[MathJax on]</a></p>
<h3>1.1 Groups</h3>
<p>A <em>group</em> is a set with an associative operation, an identity and inverses.</p>
<div class="example"><pre>gap&gt; Group((1,2,3));</pre></div>
<table class="func"><tr><td>Group( gens )</td></tr></table>
<p>Every subgroup of a cyclic group is cyclic.</p>
<div class="chlinkbot"><a href="chap2.html">Next</a></div>
</body></html>"""
SPHINX_PAGE = """<html><body><nav class="sidebar">Toggle navigation</nav><article role="main">
<h1>Integrals</h1><p>The integral <img class="math" alt="\\int_0^1 x\\,dx" src="a.png"/> equals one half.</p>
<div class="highlight"><pre>integrate(x, (x, 0, 1))</pre></div></article><footer>Back to top</footer></body></html>"""
PARI_TEX = r"""\subsec{gcd$(x,y)$}\kbdsidx{gcd}\label{se:gcd}
Creates the greatest common divisor of $x$ and $y$, where $\alpha \leq x$ in $\Z$.
\bprog
? gcd(12, 18)
%1 = 6
@eprog\noindent
The library syntax is \fun{GEN}{ggcd}{GEN x, GEN y}.

A \emph{unit} divides everything.
"""


def _manuals(tmp_path: Path, gap_extra: dict | None = None, **context) -> MathManualsSource:
    gap = {"usr/share/gap/doc/ref/chap1.html": GAP_PAGE, "usr/share/gap/doc/ref/chap1_mj.html": GAP_PAGE}
    _package(tmp_path, "gap-doc", {**gap, **(gap_extra or {})})
    _package(tmp_path, "pari-doc", {"usr/share/pari/doc/usersch3.tex": PARI_TEX})
    _package(tmp_path, "maxima-doc", {"usr/share/doc/maxima-doc/html/maxima_1.html": GAP_PAGE})
    _package(tmp_path, "python-sympy-doc", {"usr/share/doc/python-sympy-doc/html/modules/integrals.html": SPHINX_PAGE})
    return MathManualsSource("math", "owner", {}, _context(tmp_path, **context))


def test_math_manuals_read_prose_without_code_or_navigation(tmp_path):
    docs = list(_manuals(tmp_path).documents())
    by_id = {d.id: d.text for d in docs}
    assert set(by_id) == {
        "math/gap-doc/ref/chap1.html#0",
        "math/pari-doc/usersch3.tex#0",
        "math/maxima-doc/maxima_1.html#0",
        "math/python-sympy-doc/modules/integrals.html#0",
    }
    gap = by_id["math/gap-doc/ref/chap1.html#0"]
    assert gap == (
        "1.1 Groups\n\nA group is a set with an associative operation, an identity and inverses.\n\n"
        "Every subgroup of a cyclic group is cyclic."
    )
    assert by_id["math/python-sympy-doc/modules/integrals.html#0"] == (
        "Integrals\n\nThe integral \\int_0^1 x\\,dx equals one half."
    )
    pari = by_id["math/pari-doc/usersch3.tex#0"]
    assert "gcd(x,y)" in pari and "α ≤ x in ℤ" in pari and "A unit divides everything." in pari
    assert "%1 = 6" not in pari and "library syntax" not in pari and "se:gcd" not in pari
    assert MathManualsSource("math", "o", {}, _context(tmp_path)).origins() == {
        "debian:gap-doc",
        "debian:pari-doc",
        "debian:maxima-doc",
        "debian:python-sympy-doc",
    }


def test_math_manuals_bad_bytes_and_budget(tmp_path):
    bad = {"usr/share/gap/doc/ref/chap2.html": b"<p>caf\xe9 group</p>"}
    docs = list(_manuals(tmp_path, bad).documents())
    problems = [d for d in docs if d.problem]
    assert [d.id for d in problems] == ["math/gap-doc/ref/chap2.html"] and "0xe9" in problems[0].problem
    assert len(list(_manuals(tmp_path, bad, max_docs=2).documents())) == 2
    assert [d.id for d in _manuals(tmp_path, target_bytes=1).documents()] == ["math/gap-doc/ref/chap1.html#0"]


def test_math_manuals_missing_layout_is_a_data_error(tmp_path):
    _package(tmp_path, "gap-doc", {"usr/share/doc/gap-doc/copyright": "GPL"})
    source = MathManualsSource("math", "o", {"packages": ["gap-doc"]}, _context(tmp_path))
    with pytest.raises(DataError, match="gap-doc"):
        list(source.documents())


def test_cleaners_drop_code():
    assert html_to_text("<p>x</p><pre>code</pre><script>s</script><p>y</p>") == "x\n\ny"
    assert pari_tex_to_text(r"a \bprog f(x) @eprog b $\infty$") == "a b ∞"
