"""Whether the experts inside a MoE may still answer: the registry's word as it is now, however a steward changed it.

Why: stewards revoke through `flexo revoke`, the MLflow UI, the client or REST; some set the `status` tag, some only
remove or move the `active` alias. Every path that loads or serves an expert asks here, reading the registry as it is
now, so every way counts. An expert version held by a MoE is withdrawn when
- the version is tagged `status=revoked` (or it was deleted), or
- its registered model has no `active` version any more (the owner's consent alias was removed), or
- `active` points at a revoked version.
A newer active version does not withdraw an older held one: that is a retraining, not a revocation.

A long-running server asks again at most every `CONSENT_TTL_S` seconds (its bounded staleness); when the registry
cannot be read, it refuses to answer rather than answer unchecked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tasks.core.config import Profile
from tasks.core.errors import RevokedError
from tasks.registry.names import ACTIVE_ALIAS, EXPERT_TAG_PREFIX, STATUS_REVOKED, VersionRef, check_usable
from tasks.registry.store import client, ref_of, versions_if_any

CONSENT_TTL_S = 5.0  # seconds a served MoE trusts its last reading of the registry


def holdings(moe: VersionRef) -> dict[str, str]:
    """The expert versions a `flexo-moe` version holds, {domain: version}, from its `expert.<domain>` tags."""
    return {k[len(EXPERT_TAG_PREFIX) :]: v for k, v in moe.tags.items() if k.startswith(EXPERT_TAG_PREFIX)}


def withdrawal(mlclient: Any, name: str, version: str | None) -> str | None:
    """Why version `version` of `name` may no longer be used, or None while it may. `version=None`: a file the
    registry never saw for this model, judged by the model's `active` alias alone."""
    from mlflow.exceptions import MlflowException

    if version is not None:
        try:
            held = ref_of(mlclient.get_model_version(name, str(version)))
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return f"{name} version {version} no longer exists in the registry"
            raise
        try:
            check_usable(held)
        except RevokedError as err:
            return str(err)
    try:
        active = ref_of(mlclient.get_model_version_by_alias(name, ACTIVE_ALIAS))
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        return f"{name} has no `{ACTIVE_ALIAS}` version: its owner's consent alias was removed"
    if active.status == STATUS_REVOKED:
        return f"{name}@{ACTIVE_ALIAS} points at version {active.version}, which is revoked"
    return None


def withdrawn(mlclient: Any, prefix: str, held: Mapping[str, str]) -> dict[str, str]:
    """{domain: why} for every held expert version (`held`: {domain: version}) that is withdrawn."""
    reasons = {domain: withdrawal(mlclient, f"{prefix}{domain}", version) for domain, version in held.items()}
    return {domain: why for domain, why in reasons.items() if why}


def withdrawn_in(profile: Profile, moe: VersionRef) -> dict[str, str]:
    """{domain: why} for every expert inside the `flexo-moe` version `moe` that is withdrawn now."""
    return withdrawn(client(profile), profile.registry.expert_model_prefix, holdings(moe))


def check_consent(profile: Profile, moe: VersionRef) -> None:
    """RevokedError naming every withdrawn expert inside `moe`: for the paths that score a MoE as a whole and so
    cannot mask one (evaluate, attack)."""
    _refuse(moe.label, withdrawn_in(profile, moe))


def check_assembled(profile: Profile, manifest: Mapping[str, Any], label: str) -> None:
    """The same refusal for a MoE assembled outside the registry (the run directory's), whose manifest names its
    experts and their sha256: each is judged by the registered version with that sha256, else by its model's
    `active` alias. A domain never registered has nothing the registry could have revoked."""
    mlclient, prefix = client(profile), profile.registry.expert_model_prefix
    gone: dict[str, str] = {}
    for domain, sha in zip(manifest["experts"][1:], manifest.get("expert_sha256", []), strict=False):
        registered = versions_if_any(profile, f"{prefix}{domain}")
        if not registered:
            continue
        match = next((ref.version for ref in registered if ref.sha256 == sha), None)
        why = withdrawal(mlclient, f"{prefix}{domain}", match)
        if why:
            gone[domain] = why
    _refuse(label, gone)


def _refuse(label: str, gone: Mapping[str, str]) -> None:
    if gone:
        raise RevokedError(
            f"{label} holds withdrawn expert(s): "
            + "; ".join(f"{domain}: {why}" for domain, why in sorted(gone.items()))
            + ". Re-assemble without them (`flexo run --stage assemble`) before scoring it."
        )


class ConsentWatch:
    """The withdrawn experts of one served MoE, read from the registry at most every `ttl_s` seconds.

    A failed read is never papered over with an older answer: the request is refused (RevokedError).
    """

    def __init__(self, read: Callable[[], dict[str, str]], ttl_s: float = CONSENT_TTL_S) -> None:
        self._read, self.ttl_s = read, ttl_s
        self._lock = threading.Lock()
        self._at: float | None = None
        self._last: dict[str, str] = {}

    def current(self) -> dict[str, str]:
        """{domain: why} of the withdrawn experts, at most `ttl_s` seconds old."""
        with self._lock:
            now = time.monotonic()
            if self._at is not None and now - self._at < self.ttl_s:
                return dict(self._last)
            try:
                self._last = self._read()
            except Exception as err:
                self._at = None
                raise RevokedError(
                    f"the registry could not be read to confirm the experts' consent ({type(err).__name__}: {err}); "
                    "refusing to answer unchecked"
                ) from err
            self._at = now
            return dict(self._last)
