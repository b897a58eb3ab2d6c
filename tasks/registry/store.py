"""Reading the MLflow model registry: one client per store, registered versions as `VersionRef`s.

Why a cache of clients: opening a store checks its schema, which is slow; a process asks the same store many times.
The store is `tasks.core.tracking.tracking_uri` (the user's `MLFLOW_TRACKING_URI`, else the profile's SQLite file).
"""

from __future__ import annotations

from typing import Any

from tasks.core.config import Profile
from tasks.core.errors import ConfigError
from tasks.core.tracking import setup, tracking_uri
from tasks.registry.names import TAG_DOMAIN, TAG_OWNER, TAG_SHA256, TAG_STATUS, VersionRef

_CLIENTS: dict[tuple[str, str], Any] = {}


def client(profile: Profile) -> Any:
    """An MlflowClient on the profile's (or $MLFLOW_TRACKING_URI's) store, with the experiment created (one per store
    and experiment per process)."""
    from mlflow import MlflowClient

    uri = tracking_uri(profile)
    key = (uri, profile.registry.experiment)
    if key not in _CLIENTS:
        setup(profile)
        _CLIENTS[key] = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return _CLIENTS[key]


def ref_of(mv: Any) -> VersionRef:
    """An MLflow ModelVersion as a VersionRef."""
    tags = dict(mv.tags or {})
    return VersionRef(
        name=mv.name,
        version=str(mv.version),
        domain=tags.get(TAG_DOMAIN, ""),
        sha256=tags.get(TAG_SHA256, ""),
        owner=tags.get(TAG_OWNER, ""),
        status=tags.get(TAG_STATUS, ""),
        aliases=tuple(mv.aliases or ()),
        source=mv.source,
        run_id=mv.run_id,
        tags=tags,
    )


def ensure_model(mlclient: Any, name: str, description: str) -> None:
    """Create the registered model `name` unless it exists."""
    from mlflow.exceptions import MlflowException

    try:
        mlclient.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        mlclient.create_registered_model(name, description=description)


def get_version(profile: Profile, name: str, version: str | int) -> VersionRef:
    """One version (with its aliases); ConfigError naming it if it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return ref_of(client(profile).get_model_version(name, str(version)))
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ConfigError(f"{name} version {version} does not exist; `flexo experts` lists the versions") from err
        raise


def by_alias(profile: Profile, name: str, alias: str) -> VersionRef | None:
    """The version an alias points at, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return ref_of(client(profile).get_model_version_by_alias(name, alias))
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def versions(profile: Profile, name: str) -> list[VersionRef]:
    """Every version of a registered model, newest first, with aliases populated."""
    mlclient = client(profile)
    found = mlclient.search_model_versions(f"name='{name}'")
    refs = [ref_of(mlclient.get_model_version(name, mv.version)) for mv in found]
    return sorted(refs, key=lambda r: int(r.version), reverse=True)


def versions_if_any(profile: Profile, name: str) -> list[VersionRef]:
    """`versions`, or none when the model (or the store) has none to give."""
    from mlflow.exceptions import MlflowException

    try:
        return versions(profile, name)
    except MlflowException:
        return []
