"""debian_manuals and dictd adapters on fake unpacked Debian packages built in tmp_path (no network)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from tasks.core.errors import DataError
from tasks.data.sources import SourceContext, adapter_names, dictd
from tasks.data.sources import debian_manuals as dm
from tasks.data.sources.debian_manuals import DebianManualsSource, html_to_text, info_nodes, man_to_text, pod_to_text
from tasks.data.sources.dictd import DictdSource
from tests.tasks.data.fake_packages import fake_debian_package as _package
from tests.tasks.data.fake_packages import source_context

PROSE = "The scheduler decides which runnable thread gets the processor next, and for how long. " * 3

HTML_PAGE = f"""<!DOCTYPE html><html><head><title>T</title><style>body {{color: red}}</style>
<script>var secret = "SCRIPT_TEXT";</script></head>
<body><nav class="wy-nav-side"><ul><li>NAV_TEXT one</li><li>NAV_TEXT two</li></ul></nav>
<div class="navheader">NAVHEADER_TEXT</div>
<section class="wy-nav-content-wrap"><div class="document">
<h1>Scheduling<a class="headerlink" href="#s">HEADERLINK_TEXT</a></h1>
<p>{PROSE}</p>
<p>{PROSE}</p>
<div class="sidebar"><p>Back to basics: a sidebar box is part of the text.</p></div>
<pre>for x in range(3):
    print(x)</pre>
<p>Second&nbsp;paragraph &amp; more.</p>
</div></section>
<footer>FOOTER_TEXT</footer></body></html>
"""

MAN_PAGE = r""".\" a comment that must not show
.TH SCHED 7 2023-01-01 "Linux" "Linux Programmer's Manual"
.SH NAME
sched \- overview of CPU scheduling
.SH DESCRIPTION
Since Linux 2.6.23, the default scheduler is
.B CFS ,
the \fI"Completely Fair Scheduler"\fP.
.PP
A second paragraph about \fBnice\fR values.
"""

INFO_FILE = (
    "This is demo.info, produced by makeinfo.\n\n"
    "\x1f\nFile: demo.info,  Node: Top,  Next: Intro,  Up: (dir)\n\nDemo\n****\n\n* Menu:\n\n* Intro::  The start.\n\n"
    "\x1f\nFile: demo.info,  Node: Intro,  Prev: Top,  Up: Top\n\n1 Intro\n*******\n\n"
    "\x00\x08[index\x00\x08]\n* Menu:\n\n* intro: Intro.  (line 6)\n\n"
    f"{PROSE}\nSee *note Other Node:: for more.\n\n"
    "\x1f\nFile: demo.info,  Node: Concept Index,  Prev: Intro,  Up: Top\n\nIndex\n*****\n\n* scheduler: Intro.\n"
    "\x1f\nTag Table:\nNode: Top\x7f42\n\x1f\nEnd Tag Table\n"
)

POD_FILE = f"""=head1 NAME

perlsched - B<scheduling> in C<Perl> with L<threads|threads> E<lt>notesE<gt>

=head2 Details

{PROSE}

=cut
"""


def _context(cache: Path, target_bytes: int = 10**9, max_docs: int = 10**6, seed: int = 0) -> SourceContext:
    return source_context(cache, target_bytes, max_docs, seed, chunk_chars=400)


def _copyright(name: str, license_name: str = "GPL-2+") -> dict[str, bytes]:
    body = f"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nLicense: {license_name}\n"
    return {f"usr/share/doc/{name}/copyright": body.encode()}


def _manuals(cache: Path, packages: list[str], **options) -> DebianManualsSource:
    ctx_args = {k: options.pop(k) for k in ("target_bytes", "max_docs", "seed") if k in options}
    return DebianManualsSource("public", "owner", {"packages": packages, **options}, _context(cache, **ctx_args))


def _no_downloads(monkeypatch, cache: Path) -> list[str]:
    """Record which packages the adapter asks for; a package not pre-created would need the network: fail."""
    asked: list[str] = []
    real = dm.debian_package

    def fake(cache_dir: str, package: str) -> Path:
        asked.append(package)
        if not (cache / "debian" / package / ".unpacked").exists():
            raise AssertionError(f"the test tried to download {package}")
        return real(cache_dir, package)

    monkeypatch.setattr(dm, "debian_package", fake)
    monkeypatch.setattr(dictd, "debian_package", fake)
    return asked


def test_adapters_are_registered_and_defaults_leave_educational_out():
    assert {"debian_manuals", "dictd"} <= set(adapter_names())
    assert "rust-web-doc" not in dm.DEFAULT_PACKAGES and "rust-web-doc" in dm.LAYOUTS
    assert not set(dm.DEFAULT_PACKAGES) & set(dictd.DEFAULT_PACKAGES)


def test_html_page_loses_script_style_and_navigation_but_keeps_prose_and_code(tmp_path, monkeypatch):
    _package(
        tmp_path, "fake-doc", {"usr/share/doc/fake-doc/html/sched.html": HTML_PAGE.encode(), **_copyright("fake-doc")}
    )
    _no_downloads(monkeypatch, tmp_path)
    source = _manuals(tmp_path, ["fake-doc"])
    docs = list(source.documents())
    text = "\n\n".join(d.text for d in docs)
    assert "Scheduling" in text and "runnable thread" in text and "Second paragraph & more." in text
    assert "Back to basics" in text and "for x in range(3):\n    print(x)" in text
    for noise in ("SCRIPT_TEXT", "NAV_TEXT", "NAVHEADER_TEXT", "FOOTER_TEXT", "HEADERLINK_TEXT", "color: red"):
        assert noise not in text, noise
    assert all(len(d.text) <= 400 for d in docs) and len(docs) >= 2  # chunked at paragraphs (chunk_chars=400)
    assert all(d.id.startswith("public/fake-doc/usr/share/doc/fake-doc/html/sched.html#") for d in docs)
    assert len({d.id for d in docs}) == len(docs) and not any(d.problem for d in docs)
    assert source.origins() == {"debian:fake-doc"}
    prov = source.provenance()
    assert prov["debian_packages"] == {"fake-doc": "fake-doc_1.0-1_all.deb"}
    assert prov["licenses"] == {"fake-doc": ["GPL-2+"]}
    assert prov["license_files"]["fake-doc"].endswith("usr/share/doc/fake-doc/copyright")


def test_boilerplate_pages_are_skipped_by_name(tmp_path, monkeypatch):
    page = f"<html><body><p>{PROSE}</p></body></html>".encode()
    files = {f"usr/share/doc/fake-doc/html/{n}": page for n in ("guide.html", "genindex.html", "search.html")}
    files["usr/share/doc/fake-doc/changelog.txt"] = PROSE.encode()
    files["usr/share/doc/fake-doc/html/_sources/guide.rst.txt"] = PROSE.encode()
    _package(tmp_path, "fake-doc", files)
    _no_downloads(monkeypatch, tmp_path)
    names = {Path(d.source_file).name for d in _manuals(tmp_path, ["fake-doc"]).documents()}
    assert names == {"guide.html"}


def test_html_declaring_latin1_is_transcoded_and_undeclared_bad_bytes_are_a_problem(tmp_path, monkeypatch):
    declared = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"></head>'
    files = {
        "usr/share/doc/fake-doc/declared.html": (declared + "<body><p>caf\xe9 au lait</p></body></html>").encode(
            "latin-1"
        ),
        "usr/share/doc/fake-doc/broken.txt": "caf\xe9 au lait ".encode("latin-1") * 5,
    }
    _package(tmp_path, "fake-doc", files)
    _no_downloads(monkeypatch, tmp_path)
    docs = {Path(d.source_file).name: d for d in _manuals(tmp_path, ["fake-doc"]).documents()}
    assert docs["declared.html"].text == "café au lait" and docs["declared.html"].problem is None
    assert "not UTF-8: invalid byte 0xe9 at offset 3" in docs["broken.txt"].problem
    assert "broken.txt" in docs["broken.txt"].problem and docs["broken.txt"].id.startswith("public/fake-doc/")


def test_a_broken_gzip_file_is_a_problem_document(tmp_path, monkeypatch):
    _package(tmp_path, "fake-doc", {"usr/share/man/man1/bad.1.gz": b"\x1f\x8b\x08\x00garbage"})
    _no_downloads(monkeypatch, tmp_path)
    (doc,) = list(_manuals(tmp_path, ["fake-doc"]).documents())
    assert doc.problem and doc.problem.startswith("unreadable:") and "bad.1.gz" in doc.problem


@pytest.mark.parametrize("renderer", ["groff", "python"])
def test_man_page_renders_to_text(tmp_path, monkeypatch, renderer):
    if renderer == "groff" and shutil.which("groff") is None:
        pytest.skip("groff is not installed on this machine (the python renderer is tested instead)")
    files = {
        "usr/share/man/man7/sched.7.gz": gzip.compress(MAN_PAGE.encode()),
        "usr/share/man/man7/alias.7.gz": gzip.compress(b".so man7/sched.7\n"),
    }
    _package(tmp_path, "fake-man", files)
    _no_downloads(monkeypatch, tmp_path)
    docs = list(_manuals(tmp_path, ["fake-man"], man_renderer=renderer).documents())
    text = "\n\n".join(d.text for d in docs)
    assert {Path(d.source_file).name for d in docs} == {"sched.7.gz"}  # the .so alias is not a page of its own
    assert "sched - overview of CPU scheduling" in text
    assert "the default scheduler is CFS" in text and "Completely Fair Scheduler" in text
    assert "a comment" not in text and "\\f" not in text and ".TH" not in text and ".PP" not in text
    assert "SCHED(7)" not in text  # groff's page header/footer lines are dropped


def test_man_python_fallback_handles_fonts_and_escapes():
    text = man_to_text(MAN_PAGE, "python")
    assert text.startswith("NAME\n\nsched - overview") and "\\fB" not in text and "nice values" in text


def test_info_nodes_drop_headers_menus_cookies_and_index_nodes(tmp_path, monkeypatch):
    _package(tmp_path, "fake-info", {"usr/share/info/demo.info.gz": gzip.compress(INFO_FILE.encode())})
    _no_downloads(monkeypatch, tmp_path)
    docs = list(_manuals(tmp_path, ["fake-info"]).documents())
    assert docs and not any(d.problem for d in docs)  # NUL-BS index cookies are markup, not bad bytes
    assert {d.id.split("#")[1].split(".")[0] for d in docs} == {"Intro"}
    text = "\n\n".join(d.text for d in docs)
    assert text.startswith("1 Intro") and "runnable thread" in text and "See Other Node for more." in text
    assert "File:" not in text and "* Menu:" not in text and "Tag Table" not in text and "\x00" not in text
    assert [n for n, _ in info_nodes(INFO_FILE)] == ["Intro"]


def test_pod_headings_kept_and_codes_unwrapped():
    text = pod_to_text(POD_FILE)
    assert text.startswith("NAME\n\nperlsched - scheduling in Perl with threads <notes>")
    assert "=head" not in text and "=cut" not in text and "runnable thread" in text


def test_html_to_text_keeps_preformatted_lines():
    assert html_to_text("<p>a  b\nc</p><pre>x\n  y</pre>") == "a b c\n\nx\n  y"


def _five_packages(cache: Path) -> list[str]:
    names = [f"pkg{i}-doc" for i in range(5)]
    for name in names:
        pages = {f"usr/share/doc/{name}/p{j}.txt": f"{name} page {j}. {PROSE}".encode() for j in range(4)}
        _package(cache, name, pages)
    return names


def test_small_budget_stops_early_and_opens_only_the_packages_it_reads(tmp_path, monkeypatch):
    names = _five_packages(tmp_path)
    asked = _no_downloads(monkeypatch, tmp_path)
    source = _manuals(tmp_path, names, target_bytes=600, per_package_bytes=10**6)
    docs = list(source.documents())
    assert 2 <= len(docs) <= 3 and len(asked) == dm.MIN_OPEN_PACKAGES
    assert len({d.id.split("/")[1] for d in docs}) == 2  # interleaved: both open packages contribute
    assert {d.id.split("/")[1] for d in docs} == set(asked)


def test_max_docs_caps_and_full_read_visits_every_page_once_in_seeded_order(tmp_path, monkeypatch):
    names = _five_packages(tmp_path)
    asked = _no_downloads(monkeypatch, tmp_path)
    assert len(list(_manuals(tmp_path, names, max_docs=3).documents())) == 3
    asked.clear()
    full = [d.id for d in _manuals(tmp_path, names, per_package_bytes=1).documents()]
    assert len(full) == len(set(full)) == 20 and sorted(asked) == names
    first_round = {i.split("/")[1] for i in full[:5]}
    assert first_round == set(names)  # round-robin across all open packages
    assert full == [d.id for d in _manuals(tmp_path, names, per_package_bytes=1).documents()]
    assert full != [d.id for d in _manuals(tmp_path, names, per_package_bytes=1, seed=7).documents()]


# --- dictd ----------------------------------------------------------------------------------------------------

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(n: int) -> str:
    out = ""
    while True:
        out = _B64[n % 64] + out
        n //= 64
        if n == 0:
            return out


def _dictionary(cache: Path, package: str, db: str, entries: dict[str, str], bad: bytes = b"") -> None:
    body, index = b"", []
    for word, definition in {"00-database-info": "header text", **entries}.items():
        raw = f"{word}\n   {definition}\n".encode() + (bad if word == "zebra" else b"")
        index.append(f"{word}\t{_b64(len(body))}\t{_b64(len(raw))}")
        body += raw
    index.append(f"zebras\t{index[-1].split(chr(9), 1)[1]}")  # a second headword for the same definition
    files = {
        f"usr/share/dictd/{db}.index": ("\n".join(sorted(index)) + "\n").encode(),
        f"usr/share/dictd/{db}.dict.dz": gzip.compress(body),
        **_copyright(package, "WordNet3.0"),
    }
    _package(cache, package, files)


WORDS = {
    w: f"{w.capitalize()} is a word defined at some length for the test. " * 2 for w in ("apple", "mango", "zebra")
}


def test_dictd_groups_entries_skips_header_and_dedups(tmp_path, monkeypatch):
    _dictionary(tmp_path, "dict-fake", "fake", WORDS)
    _no_downloads(monkeypatch, tmp_path)
    src = DictdSource("public", "o", {"packages": ["dict-fake"], "group_chars": 200}, _context(tmp_path))
    docs = list(src.documents())
    text = "\n\n".join(d.text for d in docs)
    assert "header text" not in text and "00-database" not in text
    assert sorted(w for w in WORDS if w + "\n" in text) == sorted(WORDS) and text.count("zebra\n") == 1
    assert len(docs) == 2 and all(d.id.startswith("public/dict-fake/fake/") for d in docs)
    assert not any(d.problem for d in docs)
    assert src.provenance()["licenses"] == {"dict-fake": ["WordNet3.0"]}
    assert src.origins() == {"debian:dict-fake"}


def test_dictd_bad_bytes_become_a_problem_and_missing_dict_is_a_dataerror(tmp_path, monkeypatch):
    _dictionary(tmp_path, "dict-fake", "fake", WORDS, bad=b"\xff\xfe")
    _no_downloads(monkeypatch, tmp_path)
    docs = list(DictdSource("public", "o", {"packages": ["dict-fake"]}, _context(tmp_path)).documents())
    assert len(docs) == 1 and "not UTF-8: invalid byte 0xff" in docs[0].problem
    (tmp_path / "debian/dict-fake/usr/share/dictd/fake.dict.dz").unlink()
    with pytest.raises(DataError, match="fake.dict.dz"):
        list(DictdSource("public", "o", {"packages": ["dict-fake"]}, _context(tmp_path)).documents())


def test_dictd_small_budget_does_not_open_every_dictionary(tmp_path, monkeypatch):
    for i in range(4):
        _dictionary(tmp_path, f"dict-d{i}", f"d{i}", WORDS)
    asked = _no_downloads(monkeypatch, tmp_path)
    src = DictdSource("public", "o", {"packages": [f"dict-d{i}" for i in range(4)]}, _context(tmp_path, 100))
    assert len(list(src.documents())) == 1 and len(asked) == 1  # the second open dictionary is never advanced


def test_license_of_a_package_whose_doc_folder_links_to_another(tmp_path, monkeypatch):
    root = _package(tmp_path, "fake-dev", {"usr/share/man/man2/open.2": MAN_PAGE.encode()})
    (root / "usr/share/doc").mkdir(parents=True)
    (root / "usr/share/doc/fake-dev").symlink_to("fake-common")
    _package(tmp_path, "fake-common", _copyright("fake-common", "BSD-3-clause"))
    asked = _no_downloads(monkeypatch, tmp_path)
    source = _manuals(tmp_path, ["fake-dev"], man_renderer="python")
    assert list(source.documents()) and asked == ["fake-dev", "fake-common"]
    prov = source.provenance()
    assert prov["licenses"] == {"fake-dev": ["BSD-3-clause"]}
    assert prov["license_files"] == {"fake-dev": "debian:fake-common:usr/share/doc/fake-common/copyright"}


def test_ingest_through_the_profile_quarantines_the_bad_page(tmp_profile, tmp_path):
    from tasks.core.config import DomainConfig, SourceConfig
    from tasks.data.ingest import ingest
    from tests.tasks.data_world import with_domains

    good = f"<html><body><p>{PROSE}</p></body></html>".encode()
    files = {"usr/share/doc/fake-doc/good.html": good, "usr/share/doc/fake-doc/bad.txt": b"\xff" + PROSE.encode()}
    cache = tmp_path / "cache"
    _package(cache, "fake-doc", files)
    domain = DomainConfig(owner="o", source=SourceConfig(adapter="debian_manuals", options={"packages": ["fake-doc"]}))
    p = with_domains(tmp_profile, {"mine": domain}, source_cache_dir=str(cache))
    result = ingest(p, "mine")
    assert (result.documents, result.problems) == (2, 1)
