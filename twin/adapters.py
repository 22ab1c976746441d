"""Adapters on disk: versioned names, the twin.json beside the PEFT files, listing and the default.

An adapter is `adapters/<name>-v<N>/` with `adapter_config.json`, `adapter_model.safetensors` and
`twin.json` (base model, prompt format, data fingerprint, sizes, hyperparameters, eval metrics). A retrained
adapter always gets a new N, never a used one, even if the old directory was deleted: vLLM caches adapters by
name. Exercised by `twin train`, `twin eval`, `twin learn` and `twin adapters`.

The default adapter (what drafting uses when none is named) is the last thing the owner did: the newest
adapter, unless `adapters/.default.json` was written after it (`twin adapters use NAME`, or `twin learn`
promoting a version). A version that `twin learn`'s gate rejected stays on disk but never becomes the default
by being newest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from twin.errors import ConfigError, NotFound

NAME_RE = re.compile(r"^(?P<base>[A-Za-z0-9][A-Za-z0-9_.]*?)-v(?P<n>\d+)$")
VALID_BASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")
SEQ_FILE = ".versions.json"
DEFAULT_FILE = ".default.json"


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
    """An adapter by name (or by path), or the default one (see the module docstring) when no name is given."""
    if name and Path(name).is_dir() and (Path(name) / "adapter_config.json").exists():
        return Adapter(Path(name).name, Path(name))
    adapters = list_adapters(adapters_dir)
    if not adapters:
        raise NotFound(f"{adapters_dir}: no adapters yet; run `twin train` first")
    if name is None:
        return _default(adapters_dir, adapters)
    for a in adapters:
        if a.name == name:
            return a
    names = ", ".join(a.name for a in adapters)
    raise NotFound(f"adapter {name!r} not found in {adapters_dir}; have: {names}")


def _published_at(a: Adapter) -> float:
    return (a.path / "adapter_config.json").stat().st_mtime


def rejected(a: Adapter) -> bool:
    """Whether `twin learn`'s gate turned this version down (twin.json `gate.decision`)."""
    try:
        gate = a.meta.get("gate") or {}
    except ConfigError:
        return False
    return gate.get("decision") == "reject"


def _default(adapters_dir: Path, adapters: list[Adapter]) -> Adapter:
    candidates = [a for a in adapters if not rejected(a)] or adapters
    newest = max(candidates, key=_published_at)
    chosen = read_default(adapters_dir)
    if chosen is not None:
        name, set_at = chosen
        pinned = next((a for a in adapters if a.name == name), None)
        if pinned is not None and set_at >= _published_at(newest):
            return pinned
    return newest


def read_default(adapters_dir: Path) -> tuple[str, float] | None:
    """(name, when it was set) from `.default.json`, or None when no default was ever set (or it is unreadable)."""
    f = adapters_dir / DEFAULT_FILE
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
        return str(data["name"]), float(data["set_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def set_default(adapters_dir: Path, name: str, now: float | None = None) -> Adapter:
    """Make `name` the default adapter from `now` (a Unix time; default: the current time) until a newer adapter
    is trained or another one is set."""
    adapter = find_adapter(adapters_dir, name)
    if adapter.path.parent.resolve() != adapters_dir.resolve():
        raise NotFound(f"{name}: not an adapter under {adapters_dir}; name one that `twin adapters` lists")
    # Strictly after the adapter's own files, even on a file system with coarse timestamps.
    set_at = max(time.time() if now is None else now, _published_at(adapter) + 1e-3)
    write_json_atomic(adapters_dir / DEFAULT_FILE, {"name": adapter.name, "set_at": set_at})
    return adapter
