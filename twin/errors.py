"""The error hierarchy: every user-facing failure is a TwinError whose message is one line.

The CLI turns a TwinError into that line on stderr and a non-zero exit; anything else is a bug and keeps
its traceback. Adapters wrap library errors at the edge: `raise ExportError(path, "...") from e`.
"""

from __future__ import annotations

from pathlib import Path


class TwinError(Exception):
    """Base class: the message is shown to the user as it is, so it says what, shows the value, and the fix."""

    exit_code = 1


class ConfigError(TwinError):
    """twin.toml or a command-line value is invalid."""

    exit_code = 2


class ExportError(TwinError):
    """A chat export cannot be read; the message starts with the file's path."""

    def __init__(self, path: Path | str, message: str):
        self.path = Path(path)
        super().__init__(f"{path}: {message}")


class OwnerUnknown(ExportError):
    """The export does not say which participant is the owner."""


class StoreError(TwinError):
    """The database is missing, locked, corrupt or from a newer twin."""


class NotFound(TwinError):
    """A named contact, adapter or chat does not exist."""


class ServingUnavailable(TwinError):
    """No model backend answered."""
