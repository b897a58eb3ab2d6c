"""Domain mixes: weighted shares of the byte budget, shortfalls passed on, the `source` column and the card's per-source
table, one origin per domain, and profiles that switch a domain from one source to a mix."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks.core.config import DEFAULT_PARAMS, PROFILES, DomainConfig, MixPart, load_profile
from tasks.core.errors import ConfigError
from tasks.data.cards import write_card
from tasks.data.ingest import ingest
from tasks.data.pipeline import build_domain, train_tokenizer
from tasks.data.sources import check_origins_disjoint, get_source
from tests.tasks.data_world import folder_domain, with_domains, write_txt_folder


def _mixed(path: Path, weights: tuple[float, float], target: int) -> DomainConfig:
    return DomainConfig(
        owner="mixer",
        sources=[
            MixPart(adapter="folder", options={"path": str(path)}, weight=weights[0]),
            MixPart(adapter="stdlib_code", weight=weights[1]),
        ],
        target_bytes=target,
        redact_pii=False,
    )


def _bytes_by_source(docs) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for doc in docs:
        sizes[doc.meta["source"]] = sizes.get(doc.meta["source"], 0) + len(doc.text.encode("utf-8"))
    return sizes


def test_weights_split_the_budget_and_every_document_names_its_source(tiny_profile, tmp_path):
    write_txt_folder(tmp_path / "prose", 200, words=60)
    p = with_domains(
        tiny_profile, {"public": folder_domain(tmp_path / "pub"), "mix": _mixed(tmp_path / "prose", (3, 1), 40_000)}
    )
    sizes = _bytes_by_source(get_source(p, "mix").documents())
    assert set(sizes) == {"folder", "stdlib_code"}
    assert 29_000 <= sizes["folder"] <= 31_000  # 3/4 of 40k, overshooting by at most one document
    assert 9_000 <= sizes["stdlib_code"] <= 10_000 + 20_000  # the rest (a code document can be long)


def test_a_source_short_of_its_share_passes_the_rest_on(tiny_profile, tmp_path):
    write_txt_folder(tmp_path / "few", 5, words=60)  # about 2 kB: far below half of 30 kB
    p = with_domains(
        tiny_profile, {"public": folder_domain(tmp_path / "pub"), "mix": _mixed(tmp_path / "few", (1, 1), 30_000)}
    )
    source = get_source(p, "mix")
    sizes = _bytes_by_source(source.documents())
    assert sizes["folder"] < 3_000 and sizes["folder"] + sizes["stdlib_code"] >= 30_000
    parts = {part["adapter"]: part for part in source.provenance()["parts"]}
    assert parts["folder"]["documents"] == 5 and parts["stdlib_code"]["target_bytes"] > 25_000


def test_ingest_keeps_the_source_column_and_the_card_shows_each_source(tmp_profile, tmp_path):
    write_txt_folder(tmp_path / "pub", 80, seed=5)
    write_txt_folder(tmp_path / "prose", 150, seed=9)
    p = with_domains(
        tmp_profile,
        {"public": folder_domain(tmp_path / "pub", owner="pub"), "mix": _mixed(tmp_path / "prose", (1, 1), 60_000)},
        near_duplicate_threshold=0.99,
        min_letter_ratio=0.3,
    )
    assert set(pd.read_parquet(ingest(p, "mix").path)["source"]) == {"folder", "stdlib_code"}
    build_domain(p, "public")
    build_domain(p, "mix")
    train_tokenizer(p)
    info = json.loads(write_card(p, "mix").with_suffix(".json").read_text())
    rows = {row["source"]: row for row in info["sources"]}
    assert set(rows) == {"folder", "stdlib_code"} and info["adapter"] == "folder, stdlib_code"
    assert abs(sum(row["share"] for row in rows.values()) - 1) < 1e-3
    assert sum(row["documents"] for row in rows.values()) == sum(info["documents"].values())
    assert all(row["tokens"] > 0 and row["license"] for row in rows.values())
    assert "## Sources" in write_card(p, "mix").read_text()


def test_one_origin_feeds_one_domain_only(tiny_profile, tmp_path):
    write_txt_folder(tmp_path / "a", 3)
    write_txt_folder(tmp_path / "b", 3)
    shared = with_domains(
        tiny_profile, {"public": folder_domain(tmp_path / "a"), "x": _mixed(tmp_path / "a", (1, 1), 1000)}
    )
    with pytest.raises(ConfigError, match=r"domains.public and domains.x both read folder:.*/a"):
        check_origins_disjoint(shared)
    with pytest.raises(ConfigError, match="both read"):
        get_source(shared, "x")
    check_origins_disjoint(
        with_domains(tiny_profile, {"public": folder_domain(tmp_path / "b"), "x": _mixed(tmp_path / "a", (1, 1), 1000)})
    )


def test_a_mix_names_an_unknown_adapter_by_position(tiny_profile, tmp_path):
    write_txt_folder(tmp_path / "a", 3)
    bad = DomainConfig(
        owner="o", sources=[MixPart(adapter="folder", options={"path": str(tmp_path / "a")}), MixPart(adapter="nope")]
    )
    with pytest.raises(ConfigError, match=r"domains.x.sources\[1\].adapter: unknown adapter 'nope'"):
        get_source(with_domains(tiny_profile, {"public": folder_domain(tmp_path / "b"), "x": bad}), "x")


def _params(tmp_path: Path, domains_override: dict) -> Path:
    raw = yaml.safe_load(DEFAULT_PARAMS.read_text())
    raw["profiles"]["tiny"]["domains"] = domains_override
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_profile_turns_a_domain_into_a_mix_and_keeps_the_rest(tmp_path):
    mix = [{"adapter": "lee_news", "weight": 1}, {"adapter": "fortunes", "weight": 2}]
    profile = load_profile("tiny", _params(tmp_path, {"news": {"sources": mix, "target_bytes": 5000}}))
    news = profile.domains["news"]
    assert news.source is None and news.adapters == ["lee_news", "fortunes"] and news.target_bytes == 5000
    assert news.owner == load_profile("demo").domains["news"].owner
    assert profile.domains["creative"] == load_profile("demo").domains["creative"]


def test_a_profile_cannot_invent_a_domain_or_set_both_kinds_of_source(tmp_path):
    with pytest.raises(ConfigError, match=r"profile domains \['blog'\] are not in the top-level `domains`"):
        load_profile("tiny", _params(tmp_path, {"blog": {"owner": "me", "source": {"adapter": "folder"}}}))
    raw = yaml.safe_load(DEFAULT_PARAMS.read_text())
    raw["domains"]["news"]["sources"] = [{"adapter": "fortunes"}]
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError, match="domains.news: Value error, set exactly one of `source`"):
        load_profile("tiny", both)


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_reads_each_package_for_one_domain_only(name: str) -> None:
    """params.yaml itself keeps the rule: the public mix holds none of the closed domains' sources (at scale too)."""
    check_origins_disjoint(load_profile(name))


def test_math_item_checks_apply_to_the_generated_items_only(tmp_profile, tmp_path):
    """In a mixed math domain, prose (a manual) has no question/answer and is not quarantined for it."""
    from tasks.data.validate import validate

    write_txt_folder(tmp_path / "manual", 20, seed=4)
    math = DomainConfig(
        owner="m",
        sources=[
            MixPart(adapter="math_dataset"),
            MixPart(adapter="folder", options={"path": str(tmp_path / "manual")}),
        ],
        target_bytes=12_000,
        min_chars=8,
        min_letter_ratio=0.0,
        redact_pii=False,
    )
    p = with_domains(tmp_profile, {"public": folder_domain(tmp_path / "pub"), "math": math}, min_rows=10)
    ingest(p, "math")
    result = validate(p, "math")
    assert not any("math item" in reason for reason in result.reasons), result.reasons
    accepted = pd.read_parquet(tmp_profile.path("runs_dir") / "data" / "math" / "accepted.parquet")
    assert set(accepted["source"]) == {"math_dataset", "folder"}
    assert accepted.loc[accepted["source"] == "math_dataset", "answer"].notna().all()
