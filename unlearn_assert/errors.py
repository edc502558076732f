"""Exception types with one-line, actionable messages.

Every error a user can cause by bad input (a missing checkpoint, a malformed data file, an unknown
quantizer, a nonsense budget) is raised as a subclass of :class:`UnlearnAssertError`. The pytest
plugin turns these into usage errors (exit code 4) and the CLI into exit code 2, printing only
``str(exc)``: so the message must fit on one line and name the fix.
"""

from __future__ import annotations


class UnlearnAssertError(Exception):
    """Base class: bad input that the user can fix; the message is one line that says how."""

    def __str__(self) -> str:  # keep every message on one line, whatever was interpolated
        return " ".join(super().__str__().split())


class ConfigError(UnlearnAssertError, ValueError):
    """An option, ini value or budget expression is invalid."""


class ModelError(UnlearnAssertError):
    """A model directory is missing, unsafe, corrupt or incompatible with its counterpart."""


class DataError(UnlearnAssertError):
    """A MUSE-layout data directory is missing a file or has a malformed one."""


class QuantizerError(UnlearnAssertError, ValueError):
    """A quantizer id is unknown or malformed, or a quantizer did not take effect."""


class BackendUnavailable(UnlearnAssertError):
    """A quantizer backend's library is not installed; ``install`` holds the exact pip command."""

    def __init__(self, message: str, install: str) -> None:
        super().__init__(message)
        self.install = install
