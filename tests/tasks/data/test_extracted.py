"""The extraction cache: an adapter's documents are read from its packages once per machine; a rebuild gets the same
documents (bad ones included) and provenance without running the adapter, a stopped read leaves nothing behind, and
changed options or a user's own folder are never served from it."""

from __future__ import annotations

from collections.abc import Iterator

from tasks.core.config import DomainConfig, SourceConfig
from tasks.data.sources import Document, Source, get_source, register
from tasks.data.sources.extracted import ExtractedSource
from tasks.data.sources.textio import budget_reached
from tests.tasks.data_world import folder_domain, with_domains, write_txt_folder

CALLS: list[dict] = []


@register("counting_for_tests")
class CountingSource(Source):
    """Four documents (one unreadable, one with domain columns); counts how often it really runs."""

    license = "test"
    description = "a test adapter"

    def documents(self) -> Iterator[Document]:
        """Stops at its byte budget by itself, as the built-in adapters do (25 bytes in all)."""
        CALLS.append(dict(self.options))
        docs = [
            Document(f"{self.domain}/a", "first text", "pkg/a.txt", 0),
            Document(f"{self.domain}/b", "second", "pkg/b.txt", 1, meta={"question": "q?", "answer": "4"}),
            Document(f"{self.domain}/c", "\ufffd", "pkg/c.txt", 2, problem="not UTF-8: invalid byte 0xff (c.txt)"),
            Document(f"{self.domain}/d", "fourth", "pkg/d.txt", 3),
        ]
        total = 0
        for count, doc in enumerate(docs, start=1):
            yield doc
            total += len(doc.text.encode("utf-8"))
            if budget_reached(total, count, self.context.target_bytes, self.context.max_docs):
                return

    def provenance(self) -> dict:
        return {**super().provenance(), "package": f"pkg=={self.options.get('version', '1')}", "runs": len(CALLS)}


def _profile(tmp_profile, tmp_path, **options):
    cache = tmp_path / "cache"
    data = tmp_profile.data.model_copy(update={"source_cache_dir": str(cache)})
    domain = DomainConfig(owner="o", source=SourceConfig(adapter="counting_for_tests", options=options))
    profile = with_domains(tmp_profile, {"public": folder_domain(tmp_path / "pub"), "x": domain})
    return profile.model_copy(update={"data": data})


def _read(profile) -> tuple[list[tuple], dict, bool]:
    source = get_source(profile, "x")
    docs = [(d.id, d.text, d.source_file, d.row, d.meta, d.problem) for d in source.documents()]
    return docs, source.provenance(), source.hit


def test_the_second_read_comes_from_the_cache_unchanged(tmp_profile, tmp_path):
    CALLS.clear()
    profile = _profile(tmp_profile, tmp_path)
    first, first_provenance, first_hit = _read(profile)
    second, second_provenance, second_hit = _read(profile)
    assert len(CALLS) == 1 and not first_hit and second_hit
    assert second == first and len(first) == 4 and first[2][5].startswith("not UTF-8")
    assert second_provenance == first_provenance and second_provenance["runs"] == 1


def test_a_stopped_read_leaves_no_cache_and_other_options_extract_again(tmp_profile, tmp_path):
    CALLS.clear()
    profile = _profile(tmp_profile, tmp_path)
    source = get_source(profile, "x")
    stream = source.documents()
    next(stream)
    stream.close()  # the consumer stopped after one document (a budget, an error)
    assert not source.path.exists() and not list(source.path.parent.glob("*.part"))
    _read(profile)
    _read(_profile(tmp_profile, tmp_path, version="2"))
    assert CALLS == [{}, {}, {"version": "2"}]


def test_a_users_folder_is_read_every_time(tmp_profile, tmp_path):
    write_txt_folder(tmp_path / "mine", 3)
    profile = with_domains(
        tmp_profile, {"public": folder_domain(tmp_path / "pub"), "mine": folder_domain(tmp_path / "mine")}
    )
    assert not isinstance(get_source(profile, "mine"), ExtractedSource)
    (tmp_path / "mine" / "new.txt").write_text("a document added later, long enough to count\n", encoding="utf-8")
    assert len(list(get_source(profile, "mine").documents())) == 4


def _counting_and_folder_mix(tmp_profile, tmp_path, folder_weight: float, target_bytes: int):
    """A profile whose domain `x` mixes the counting adapter (weight 1) with a folder of 3 texts (`folder_weight`)."""
    from tasks.core.config import MixPart

    write_txt_folder(tmp_path / "mine", 3)
    mix = DomainConfig(
        owner="o",
        sources=[
            MixPart(adapter="counting_for_tests", weight=1),
            MixPart(adapter="folder", options={"path": str(tmp_path / "mine")}, weight=folder_weight),
        ],
        target_bytes=target_bytes,
    )
    return _profile(tmp_profile, tmp_path).model_copy(
        update={"domains": {"public": folder_domain(tmp_path / "pub"), "x": mix}}
    )


def test_in_a_mix_the_adapter_gets_its_share_of_the_budget(tmp_profile, tmp_path):
    profile = _counting_and_folder_mix(tmp_profile, tmp_path, folder_weight=3, target_bytes=4000)
    source = get_source(profile, "x")
    list(source.documents())
    cached = source.parts[0][0]
    assert (
        isinstance(cached, ExtractedSource) and cached.inner.context.target_bytes == 1000 == cached.context.target_bytes
    )


def test_in_a_mix_an_adapter_that_stops_at_its_share_is_cached(tmp_profile, tmp_path):
    """The mix must not cut off an adapter right after its last document: it would never finish, so never be cached."""
    CALLS.clear()
    # the counting adapter's 25-byte share of 50 is met by its last document ("fourth")
    profile = _counting_and_folder_mix(tmp_profile, tmp_path, folder_weight=1, target_bytes=50)
    first = [d.id for d in get_source(profile, "x").documents()]
    again = get_source(profile, "x")
    second = [d.id for d in again.documents()]
    assert first == second and again.parts[0][0].hit and len(CALLS) == 1
