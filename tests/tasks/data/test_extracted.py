"""The extraction cache: an adapter's documents are read from its packages once per machine; a rebuild gets the same
documents (bad ones included) and provenance without running the adapter, a stopped read leaves nothing behind, and
changed options or a user's own folder are never served from it."""

from __future__ import annotations

from collections.abc import Iterator

from tasks.core.config import DomainConfig, SourceConfig
from tasks.data.sources import Document, Source, get_source, register
from tasks.data.sources.extracted import ExtractedSource
from tests.tasks.data_world import folder_domain, with_domains, write_txt_folder

CALLS: list[dict] = []


@register("counting_for_tests")
class CountingSource(Source):
    """Four documents (one unreadable, one with domain columns); counts how often it really runs."""

    license = "test"
    description = "a test adapter"

    def documents(self) -> Iterator[Document]:
        CALLS.append(dict(self.options))
        yield Document(f"{self.domain}/a", "first text", "pkg/a.txt", 0)
        yield Document(f"{self.domain}/b", "second", "pkg/b.txt", 1, meta={"question": "q?", "answer": "4"})
        yield Document(f"{self.domain}/c", "\ufffd", "pkg/c.txt", 2, problem="not UTF-8: invalid byte 0xff (c.txt)")
        yield Document(f"{self.domain}/d", "fourth", "pkg/d.txt", 3)

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


def test_in_a_mix_the_adapter_gets_its_share_of_the_budget(tmp_profile, tmp_path):
    from tasks.core.config import MixPart

    write_txt_folder(tmp_path / "mine", 3)
    mix = DomainConfig(
        owner="o",
        sources=[
            MixPart(adapter="counting_for_tests", weight=1),
            MixPart(adapter="folder", options={"path": str(tmp_path / "mine")}, weight=3),
        ],
        target_bytes=4000,
    )
    profile = _profile(tmp_profile, tmp_path).model_copy(
        update={"domains": {"public": folder_domain(tmp_path / "pub"), "x": mix}}
    )
    source = get_source(profile, "x")
    list(source.documents())
    cached = source.parts[0][0]
    assert (
        isinstance(cached, ExtractedSource) and cached.inner.context.target_bytes == 1000 == cached.context.target_bytes
    )
