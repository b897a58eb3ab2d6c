"""Errors a user can act on. Each carries the exit code the `flexo` CLI returns for it.

Why: an MLOps team scripts around exit codes (a revoked expert is not a crash), so each kind of refusal has its own.
"""

from __future__ import annotations


class FlexoError(Exception):
    """Base class: the message says what went wrong and what to do."""

    exit_code = 1


class ConfigError(FlexoError, ValueError):
    """`params.yaml` or a command-line value is invalid; the message names the key."""

    exit_code = 3


class DataError(FlexoError):
    """Input data is unusable; the message names the file (and row) and what to do."""

    exit_code = 4


class IntegrityError(FlexoError):
    """A weight file's sha256 does not match the registry, or shared weights differ where they must not."""

    exit_code = 5


class RevokedError(FlexoError):
    """A revoked model version was asked for; the message names the revocation."""

    exit_code = 6


class GateError(FlexoError):
    """A check refused a model (e.g. the extraction-attack admission gate)."""

    exit_code = 7


EXIT_CODES = {
    0: "success",
    1: "a pipeline step failed (see the message and the logs)",
    2: "bad command-line usage",
    ConfigError.exit_code: "invalid configuration (params.yaml or an option)",
    DataError.exit_code: "unusable input data (file and row named)",
    IntegrityError.exit_code: "integrity check failed (sha256 or frozen weights)",
    RevokedError.exit_code: "a revoked model version was requested",
    GateError.exit_code: "a model was refused by a gate",
}
