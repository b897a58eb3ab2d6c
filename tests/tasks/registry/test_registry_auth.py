"""Access control on a real auth-enabled MLflow server (`--app-name basic-auth`) on loopback: the steward of `news`
(MANAGE on flexo-expert-news only) may revoke news's expert and is refused on math's, which stays untouched."""

from __future__ import annotations

import secrets

import pytest

from tasks.registry import registry
from tasks.registry.governance import audit_trail, revoke
from tests.tasks.mlflow_servers import start, stop
from tests.tasks.registry_world import build_world, make_expert, md5_of


@pytest.mark.server
@pytest.mark.slow  # measured 229 s wall (45 s CPU) on the shared 2-core machine
def test_steward_may_revoke_own_domain_only(tmp_profile, tmp_path, monkeypatch) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    admin_password = secrets.token_urlsafe(16)
    config = tmp_path / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'basic_auth.db'}\n"
        f"admin_username = admin\nadmin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    server, url = start(
        [
            "--app-name",
            "basic-auth",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'tracking.db'}",
            "--artifacts-destination",
            str(tmp_path / "served-artifacts"),
        ],
        tmp_path,
        env={"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)},
    )
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
        world = build_world(tmp_profile)
        registry.register_expert(tmp_profile, "news", make_expert(world, "news", 1), md5_of("news"))
        registry.register_expert(tmp_profile, "math", make_expert(world, "math", 1), md5_of("math"))
        steward_password = secrets.token_urlsafe(16)
        auth = get_app_client("basic-auth", tracking_uri=url)
        auth.create_user("steward-news", steward_password)
        auth.grant_user_permission("steward-news", "registered_model", "flexo-expert-news", "MANAGE")

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "steward-news")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", steward_password)
        allowed = revoke(tmp_profile, "news", 1, reason="consent withdrawn", reassemble=None)
        assert allowed.expert.status == "revoked" and allowed.expert.tags["revoked_by"] == "steward-news"
        with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
            revoke(tmp_profile, "math", 1, reason="not mine to revoke", reassemble=None)

        math = registry.get_version(tmp_profile, "flexo-expert-math", 1)
        assert math.status == "active" and math.aliases == ("active",) and "revoked_by" not in math.tags
        assert [(r.event, r.model, r.actor) for r in audit_trail(tmp_profile) if r.event == "revoked"] == [
            ("revoked", "flexo-expert-news", "steward-news")
        ]
    finally:
        stop(server)
