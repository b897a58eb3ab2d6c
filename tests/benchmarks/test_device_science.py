"""The science run's step driver (benchmarks/device_science.py): data parts carried over several calls, each step
skipped once its outputs exist, a stage cut at its budget, and what comes back from $OUT within the device tool's limits
(at most 8 files of at most 16 MiB). The model stages themselves are `flows.headless`'s (tests/flows/test_headless.py);
the whole chain ran as a dry run at the tiny profile (benchmarks/RESULTS.md)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tarfile
import time

import pytest
import yaml

from tasks.core.config import DEFAULT_PARAMS, load_profile
from tests.benchmarks.conftest import load_benchmark

science = load_benchmark("device_science")
MIB = 2**20


@pytest.fixture
def sc(tmp_path):
    return science.Science(
        profile="tiny",
        run_dir=tmp_path / "run",
        base_params=DEFAULT_PARAMS,
        carry_dir=tmp_path / "carry",
        out_dir=tmp_path / "out",
        device="cpu",
    )


def _members(tmp_path) -> list[tuple[object, str]]:
    """Three incompressible files under the run directory's layout (so the archive needs several small parts)."""
    source = tmp_path / "source"
    source.mkdir()
    members = []
    for name in ("data/public/train.parquet", "data/public/split.json", "runs/tiny/router/public.safetensors"):
        path = source / name.replace("/", "_")
        path.write_bytes(os.urandom(3000))
        members.append((path, name))
    return members


def _call_carrying(sc, packed, names: list[str], manifest: bool = True) -> None:
    """What one device call brings: the manifest and the named parts (the tree is laid out again each call)."""
    shutil.rmtree(sc.carry_dir, ignore_errors=True)
    sc.carry_dir.mkdir(parents=True)
    for name in [*names, *(["manifest.json"] if manifest else [])]:
        shutil.copyfile(packed / name, sc.carry_dir / name)


def test_data_parts_carried_over_several_calls_are_unpacked_once_all_are_there(sc, tmp_path) -> None:
    members = _members(tmp_path)
    packed = tmp_path / "packed"
    packed.mkdir()
    manifest = science.write_parts(members, packed, 4000, "tiny")
    names = [p["name"] for p in manifest["parts"]]
    assert len(names) == 3 and all(p["bytes"] <= 4000 for p in manifest["parts"])

    _call_carrying(sc, packed, [names[0]])
    first = science.data(sc)
    assert first.status == science.MORE
    assert first.details["carry"] == [[str(sc.carry_dir / "manifest.json"), str(sc.carry_dir / n)] for n in names[1:]]
    _call_carrying(sc, packed, [names[1]])
    (sc.carry_dir / names[1]).write_bytes(b"damaged in transfer")  # not kept: its sha256 differs
    assert science.data(sc).status == science.MORE
    assert not (sc.run_dir / members[0][1]).exists()
    _call_carrying(sc, packed, names[1:], manifest=False)  # the manifest kept from the first call is used
    done = science.data(sc)
    assert done.status == science.DONE, done.message
    for path, name in members:
        assert (sc.run_dir / name).read_bytes() == path.read_bytes()
    assert not sc.incoming.exists()
    params = yaml.safe_load(sc.params.read_text())["profiles"]["tiny"]
    assert params["paths"]["data_dir"] == str(sc.run_dir / "data") and params["runtime"]["device"] == "cpu"
    assert load_profile("tiny", sc.params).path("runs_dir") == sc.run_dir / "runs"
    _call_carrying(sc, packed, [])
    assert science.data(sc).message == "data already unpacked"


def test_the_same_files_pack_to_the_same_bytes_and_a_repeated_pack_is_skipped(tmp_path) -> None:
    members = _members(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    packed = science.write_parts(members, first, 4000, "tiny")
    os.utime(members[0][0], ns=(1, 1))  # another pack of equal bytes at another time: still the same archive
    again = science.write_parts(members, second, 4000, "tiny")
    assert packed["archive_sha256"] == again["archive_sha256"]
    assert science.packed_manifest(second, members, 4000) == again
    assert science.packed_manifest(second, members, 8000) is None  # another part size
    members[1][0].write_bytes(os.urandom(3001))
    assert science.packed_manifest(second, members, 4000) is None  # a changed file
    science.write_parts(members, second, 4000, "tiny")
    (second / "part-01").unlink()
    assert science.packed_manifest(second, members, 4000) is None  # a part gone


def test_the_run_keeps_the_data_folders_name(sc) -> None:
    """`small` reads data-at-scale/ (its cards are filed under that name): the run directory's copy keeps it."""
    small = dataclasses.replace(sc, profile="small")
    small.run_dir.mkdir(parents=True)
    science.write_params(small)
    assert load_profile("small", small.params).path("data_dir") == small.run_dir / "data-at-scale"
    assert science._data_name(small) == "data-at-scale"


def test_a_model_step_needs_the_data_and_the_steps_before_it(sc) -> None:
    assert science.model_stage(sc, "public").status == science.MISSING  # a fresh machine: nothing under /tmp
    sc.run_dir.mkdir(parents=True)
    (sc.run_dir / science.UNPACKED).write_text("sha\n")
    science.write_params(sc)
    refused = science.model_stage(sc, "experts")
    assert refused.status == science.MISSING and "`public`" in refused.message
    assert science.model_stage(sc, "evaluate").status == science.MISSING


def test_a_step_whose_outputs_exist_is_skipped_and_owners_left_are_named(sc) -> None:
    sc.run_dir.mkdir(parents=True)
    (sc.run_dir / science.UNPACKED).write_text("sha\n")
    science.write_params(sc)
    paths = science.run_paths(sc)
    owners = list(paths.profile.closed_domains)
    assert science.todo(sc, "public") is None and science.todo(sc, "experts") == owners
    paths.public_dir.mkdir(parents=True)
    (paths.public_dir / "train_result.json").write_text("{}")
    started = time.monotonic()
    skipped = science.model_stage(sc, "public")
    assert skipped.status == science.DONE and "already done" in skipped.message
    assert time.monotonic() - started < 10  # no child was started
    paths.expert_dir(owners[0]).mkdir(parents=True)
    (paths.expert_dir(owners[0]) / "expert_card.json").write_text("{}")
    assert science.todo(sc, "experts") == owners[1:]
    assert science._done_table(sc)["experts"] == owners[1:] and science._done_table(sc)["public"] is True


def test_a_stage_over_its_budget_is_cut_and_its_output_kept(tmp_path) -> None:
    log = tmp_path / "logs" / "child.log"
    started = time.monotonic()
    code = science.run_child(
        [sys.executable, "-c", "print('started', flush=True); import time; time.sleep(120)"], log, 2
    )
    assert code is None and time.monotonic() - started < science.KILL_GRACE_S + 10
    assert "started" in log.read_text()
    assert science.run_child([sys.executable, "-c", "raise SystemExit(3)"], log, 60) == 3


def test_an_absent_module_cannot_be_imported(tmp_path, monkeypatch) -> None:
    (tmp_path / "flexo_absent_probe.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", [science._Absent(("flexo_absent_probe",)), *sys.meta_path])
    with pytest.raises(ModuleNotFoundError, match="absent on the device"):
        import flexo_absent_probe  # noqa: F401


def test_gathered_files_stay_within_the_device_tools_limits(sc) -> None:
    run = sc.run_dir / "runs" / "tiny"
    (run / "public" / "ckpt" / "last").mkdir(parents=True)
    (run / "public" / "ckpt" / "last" / "state.json").write_text("{}")  # a checkpoint: never gathered
    (run / "public" / "model").mkdir()
    (run / "public" / "model" / "model.safetensors").write_bytes(os.urandom(1000))  # weights: never gathered
    (run / "public" / "model" / "tokenizer.json").write_text("{}")  # an input: never gathered
    (run / "public" / "train_result.json").write_text(json.dumps({"sha256": "x"}))
    (sc.run_dir / "data" / "public").mkdir(parents=True)
    (sc.run_dir / "data" / "public" / "split.json").write_text("{}")  # the data: an input, never gathered
    (sc.run_dir / "logs").mkdir()
    (sc.run_dir / "logs" / "public.log").write_bytes(b"early\n" + os.urandom(science.LOG_TAIL_BYTES) + b"\nlast line\n")
    (run / "eval").mkdir()
    (run / "eval" / "huge.json").write_bytes(b"x" * (science.MEMBER_MAX_BYTES + 1))
    figures = sc.run_dir / "reports" / "flexmix-tiny"
    figures.mkdir(parents=True)
    for index in range(6):  # 6 incompressible figures of 3.5 MiB: more than one archive can hold
        (figures / f"figure{index}.png").write_bytes(os.urandom(int(3.5 * MIB)))

    written = science.gather(sc, science.Outcome(science.DONE, "test"), "gather")
    files = list(sc.out_dir.iterdir())
    assert sorted(files) == sorted(written) and len(files) <= science.OUT_MAX_FILES
    assert all(f.stat().st_size <= science.OUT_MAX_BYTES for f in files)
    status = json.loads((sc.out_dir / "status.json").read_text())
    with tarfile.open(sc.out_dir / "science-tiny.tar.gz") as tar:
        names = tar.getnames()
        log = tar.extractfile("logs/public.log").read()
    assert names == status["archive"]["files"]
    assert "runs/tiny/public/train_result.json" in names
    assert not [
        n for n in names if "ckpt" in n or n.startswith("data/") or n.endswith((".safetensors", "tokenizer.json"))
    ]
    assert log.endswith(b"last line\n") and not log.startswith(b"early") and len(log) == science.LOG_TAIL_BYTES
    assert "runs/tiny/eval/huge.json" in status["left_out"]
    dropped = [n for n in status["left_out"] if n.endswith(".png")]
    assert dropped and len(dropped) + len([n for n in names if n.endswith(".png")]) == 6
