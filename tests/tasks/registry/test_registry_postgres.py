"""The registry on a real PostgreSQL-backed `mlflow server` on loopback (artifacts proxied by the server).

Set-up: `mlflow/postgres-local.sh` starts a throwaway cluster (Debian's postgresql; `mlflow/postgres-local.sh install`
installs it in CI). Skipped with the reason when the PostgreSQL binaries are absent.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tasks.core.config import REPO_ROOT
from tasks.core.errors import RevokedError
from tasks.registry import registry
from tasks.registry.governance import revoke
from tests.tasks.mlflow_servers import free_port, start, stop
from tests.tasks.registry_world import build_world, make_expert, md5_of

SCRIPT = REPO_ROOT / "mlflow" / "postgres-local.sh"


def _postgres_available() -> bool:
    return shutil.which("initdb") is not None or any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


@pytest.mark.server
@pytest.mark.slow  # a cold mlflow server migrating a fresh PostgreSQL schema: minutes on the shared 2-core machine
@pytest.mark.skipif(
    not _postgres_available(), reason="PostgreSQL binaries absent: run `mlflow/postgres-local.sh install`"
)
def test_registry_on_postgres_backed_server(tmp_profile, tmp_path, monkeypatch) -> None:
    import psycopg2

    cluster = Path(
        tempfile.mkdtemp(prefix="flexo-pg-", dir="/tmp")
    )  # outside pytest's 0700 tree: the postgres user reads it
    cluster.chmod(0o755)
    port = free_port()
    uri = subprocess.run(
        [str(SCRIPT), "start", str(cluster / "pg"), str(port)], check=True, capture_output=True, text=True
    ).stdout.strip()
    server = None
    try:
        store = uri.replace("postgresql://", "postgresql+psycopg2://", 1)  # the driver installed (psycopg2-binary)
        server, url = start(
            ["--backend-store-uri", store, "--artifacts-destination", str(tmp_path / "artifacts")], tmp_path
        )
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        world = build_world(tmp_profile)
        ref = registry.register_expert(tmp_profile, "news", make_expert(world, "news", 1), md5_of("news"))
        assert ref.source.startswith("mlflow-artifacts:")  # weights went through the server's artifact proxy
        assert registry.fetch(tmp_profile, ref).joinpath("expert.safetensors").exists()  # downloaded and sha-checked
        revoke(tmp_profile, "news", 1, reason="consent withdrawn", by="steward-news", reassemble=None)
        with pytest.raises(RevokedError, match="revoked by steward-news"):
            registry.fetch(tmp_profile, registry.get_version(tmp_profile, "flexo-expert-news", 1))
        # the state lives in PostgreSQL itself
        with psycopg2.connect(uri) as connection, connection.cursor() as cursor:
            cursor.execute(
                "SELECT key, value FROM model_version_tags WHERE name = %s AND version = 1", ("flexo-expert-news",)
            )
            tags = dict(cursor.fetchall())
        assert (
            tags["status"] == "revoked"
            and tags["revoked_reason"] == "consent withdrawn"
            and tags["sha256"] == ref.sha256
        )
    finally:
        if server is not None:
            stop(server)
        subprocess.run([str(SCRIPT), "stop", str(cluster / "pg")], check=False, capture_output=True)
        shutil.rmtree(cluster, ignore_errors=True)
