"""Per-owner DVC versioning in a real git+DVC repository: each domain is tracked on its own, `dvc push` of one domain
touches only its owner's remote, and the recorded md5 is the hash later steps log for lineage."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from tasks.core.datasets import dataset_hash
from tasks.core.errors import DataError
from tasks.data.versioning import version_domain
from tests.tasks.data_world import folder_domain, with_domains


def dvc(repo, *args: str) -> str:
    """DVC's own command line in `repo`, as a user would run it: the independent check of what the API recorded. A
    failure is a DataError with DVC's last lines, as flexo reports DVC's failures."""
    quiet = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_DAEMON": "0"}  # no analytics or updater daemon left behind
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=quiet, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-4:])
        raise DataError(f"`dvc {' '.join(args)}` failed in {repo} (exit {done.returncode}): {tail}")
    return done.stdout


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def repo(tmp_profile, tmp_path):
    root = tmp_path  # tmp_profile's data_dir is tmp_path/data, so the repository is tmp_path
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for domain, texts in {"news": ["a news story", "another story"], "code": ["def f():\n    return 1\n"]}.items():
        d = root / "data" / domain
        d.mkdir(parents=True)
        pd.DataFrame({"id": [f"{domain}/{i}" for i in range(len(texts))], "text": texts}).to_parquet(
            d / "train.parquet", index=False
        )
    domains = {
        "public": tmp_profile.domains["public"],
        "news": folder_domain(root, owner="news-owner"),
        "code": folder_domain(root, owner="code-owner"),
    }
    return with_domains(tmp_profile, domains)


def test_push_of_one_domain_touches_only_its_owners_remote(repo, tmp_path):
    remotes = tmp_path / "remotes"
    news = version_domain(repo, "news")
    assert news.remote == "news-owner" and news.pushed
    assert _files(remotes / "news-owner"), "news was not pushed to its owner's remote"
    assert not (remotes / "code-owner").exists() or not _files(remotes / "code-owner")
    news_files = _files(remotes / "news-owner")

    code = version_domain(repo, "code")
    assert _files(remotes / "code-owner")
    assert _files(remotes / "news-owner") == news_files  # pushing code left news' remote untouched
    assert set(_files(remotes / "code-owner")).isdisjoint(news_files)

    # each domain has its own .dvc file, its own hash, and names its owner's remote
    meta = yaml.safe_load((tmp_path / "data" / "news.dvc").read_text())
    assert meta["outs"][0]["remote"] == "news-owner"
    assert meta["outs"][0]["md5"] == news.md5 == dataset_hash(repo, "news")  # our hash is DVC's hash
    assert code.md5 != news.md5
    config = (tmp_path / ".dvc" / "config").read_text()
    assert "analytics = false" in config and "news-owner" in config and "code-owner" in config


@pytest.mark.slow  # ~20 s of DVC subprocesses; the isolation test above covers the push path
def test_pull_restores_a_deleted_domain_from_its_remote(repo, tmp_path):
    version_domain(repo, "news")
    before = dataset_hash(repo, "news")
    (tmp_path / "data" / "news" / "train.parquet").unlink()
    dvc(tmp_path, "checkout", "-q", "data/news.dvc")  # from the local cache
    assert dataset_hash(repo, "news") == before
    dvc(tmp_path, "gc", "-w", "-f", "-q")
    subprocess.run(["rm", "-rf", str(tmp_path / ".dvc" / "cache")], check=True)
    (tmp_path / "data" / "news" / "train.parquet").unlink()
    dvc(tmp_path, "pull", "-q", "data/news.dvc")  # from news-owner's remote, named in the .dvc file
    assert dataset_hash(repo, "news") == before


def test_missing_git_repository_is_a_clear_error(tmp_profile, tmp_path):
    from tasks.core.errors import DataError

    d = tmp_path / "data" / "news"
    d.mkdir(parents=True)
    (d / "x.txt").write_text("x")
    p = with_domains(tmp_profile, {"public": tmp_profile.domains["public"], "news": folder_domain(tmp_path)})
    with pytest.raises(DataError, match="not a git repository"):
        version_domain(p, "news")


def test_shared_stages_are_recorded_so_dvc_status_is_clean(repo, tmp_path):
    """After a full data build the cross-domain stages are committed too: `dvc status` has nothing left to rerun."""
    from tasks.data.versioning import record_shared_stages

    stages = {
        "disjoint": {"cmd": "true", "deps": ["data"], "metrics": [{"reports/data/disjoint.json": {"cache": False}}]},
        "cards": {"cmd": "true", "deps": ["data"], "outs": [{"reports/data/cards": {"cache": False}}]},
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    cards = tmp_path / "reports" / "data" / "cards"
    cards.mkdir(parents=True)
    (cards / "news.md").write_text("# news\n")
    (cards.parent / "disjoint.json").write_text("{}\n")
    assert record_shared_stages(repo) == ["disjoint", "cards"]  # `tokenizer` is not in this dvc.yaml: skipped
    assert "up to date" in dvc(tmp_path, "status")
    (cards / "news.md").write_text("# news, edited\n")
    assert "cards" in dvc(tmp_path, "status")  # the record is real: a changed output shows


def test_shared_stages_this_profile_does_not_write_are_left_alone(repo, tmp_path):
    """An anchor's profile trains no tokenizer and writes its reports under reports/data/<profile>/: committing
    dvc.yaml's stages would fail on the missing tokenizer or record another build's files. Likewise for a profile with
    its own data folder."""
    from tasks.core.config import AnchorConfig
    from tasks.data.versioning import record_shared_stages

    stages = {
        "disjoint": {"cmd": "true", "deps": ["data"], "metrics": [{"reports/data/disjoint.json": {"cache": False}}]},
        "tokenizer": {"cmd": "true", "deps": ["data"], "outs": ["data/tokenizer"]},
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (tmp_path / "reports" / "data").mkdir(parents=True)
    (tmp_path / "reports" / "data" / "disjoint.json").write_text("{}\n")
    anchored = repo.model_copy(update={"anchor": AnchorConfig(source="checkpoint", path=str(tmp_path / "m"))})
    assert record_shared_stages(anchored) == []  # no data/tokenizer here: `dvc commit tokenizer` would fail
    with pytest.raises(DataError, match="tokenizer"):
        dvc(tmp_path, "commit", "-f", "-q", "tokenizer")  # what recording it anyway does
    elsewhere = repo.model_copy(
        update={"paths": repo.paths.model_copy(update={"data_dir": str(tmp_path / "data-at-scale")})}
    )
    assert record_shared_stages(elsewhere) == []
    (tmp_path / "data" / "tokenizer").mkdir()
    (tmp_path / "data" / "tokenizer" / "tokenizer.json").write_text("{}\n")
    assert record_shared_stages(repo) == ["disjoint", "tokenizer"]  # the profile dvc.yaml describes: both recorded
