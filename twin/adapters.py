"""Adapters on disk: versioned names, the twin.json beside the PEFT files, listing and the default.

An adapter is `adapters/<name>-v<N>/` with `adapter_config.json`, `adapter_model.safetensors` and
`twin.json` (base model, prompt format, data fingerprint, sizes, hyperparameters, eval metrics). A retrained
adapter always gets a new N, never a used one, even if the old directory was deleted: vLLM caches adapters by
name. Exercised by `twin train` and `twin eval`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from twin.errors import ConfigError, NotFound

NAME_RE = re.compile(r"^(?P<base>[A-Za-z0-9][A-Za-z0-9_.]*?)-v(?P<n>\d+)$")
VALID_BASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")
SEQ_FILE = ".versions.json"


@dataclass(frozen=True)
class Adapter:
    name: str
    path: Path

    @property
    def meta(self) -> dict:
        """twin.json ({} for a plain PEFT directory)."""
        f = self.path / "twin.json"
        try:
            return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
        except (OSError, ValueError) as e:
            raise ConfigError(f"{f}: unreadable ({e}); retrain the adapter or restore the file") from e


def _read_seq(adapters_dir: Path) -> dict[str, int]:
    f = adapters_dir / SEQ_FILE
    return json.loads(f.read_text(encoding="utf-8")) if f.exists() else {}


def next_name(adapters_dir: Path, base: str) -> str:
    """The next unused versioned name: `twin` -> `twin-v1`, then `twin-v2`, ... never reusing a number.

    Reserves the number at once (in `.versions.json`), so an interrupted run also burns its number.
    """
    if not VALID_BASE.match(base):
        raise NotFound(f"adapter name {base!r}: use letters, digits, '_' and '.', e.g. --name mira")
    adapters_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    seq = _read_seq(adapters_dir)
    used = [int(m["n"]) for p in adapters_dir.iterdir() if (m := NAME_RE.match(p.name)) and m["base"] == base]
    n = max([seq.get(base, 0), *used]) + 1
    seq[base] = n
    write_json_atomic(adapters_dir / SEQ_FILE, seq)
    return f"{base}-v{n}"


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def publish(staging: Path, final: Path) -> Path:
    """Move a fully written adapter directory into place in one rename; never leave half an adapter."""
    if final.exists():
        raise FileExistsError(final)
    os.chmod(staging, 0o700)
    os.replace(staging, final)
    return final


def discard(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def list_adapters(adapters_dir: Path) -> list[Adapter]:
    """Complete adapters (with adapter_config.json), oldest version first within a name."""
    if not adapters_dir.exists():
        return []
    found = [
        Adapter(p.name, p) for p in adapters_dir.iterdir()
        if p.is_dir() and NAME_RE.match(p.name) and (p / "adapter_config.json").exists()
    ]
    def key(a: Adapter) -> tuple[str, int]:
        m = NAME_RE.match(a.name)
        return (m["base"], int(m["n"]))
    return sorted(found, key=key)


def find_adapter(adapters_dir: Path, name: str | None) -> Adapter:
    """An adapter by name (or by path), or the newest one when no name is given."""
    if name and Path(name).is_dir() and (Path(name) / "adapter_config.json").exists():
        return Adapter(Path(name).name, Path(name))
    adapters = list_adapters(adapters_dir)
    if not adapters:
        raise NotFound(f"{adapters_dir}: no adapters yet; run `twin train` first")
    if name is None:
        return max(adapters, key=lambda a: (a.path / "adapter_config.json").stat().st_mtime)
    for a in adapters:
        if a.name == name:
            return a
    names = ", ".join(a.name for a in adapters)
    raise NotFound(f"adapter {name!r} not found in {adapters_dir}; have: {names}")
