"""The data home: the one directory that holds all of twin's state.

`--home DIR`, else env `TWIN_HOME`, else the platform's user data dir. Inside: `twin.toml`, `twin.db`,
`adapters/`, `models/`, `runs/`. Directories are created owner-only (0700): the home holds private chats.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "twin.toml"

    @property
    def db(self) -> Path:
        return self.root / "twin.db"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def ensure(self) -> "Home":
        """Create the home owner-only; existing directories keep their mode."""
        for d in (self.root, self.adapters, self.models, self.runs):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self


def resolve_home(home: str | os.PathLike | None = None) -> Home:
    """The data home from the flag, the environment or the platform default, in that order."""
    if home:
        return Home(Path(home).expanduser().resolve())
    if env := os.environ.get("TWIN_HOME"):
        return Home(Path(env).expanduser().resolve())
    import platformdirs

    return Home(Path(platformdirs.user_data_dir("twin", appauthor=False)))
