"""Launching vLLM's OpenAI-compatible server with the base model and twin's adapters (multi-LoRA).

vLLM is never imported: it runs in its own environment (`scripts/setup-vllm` makes `.venv-vllm` on a CPU
machine; a GPU host installs upstream `vllm`) as a separate process, started with
`python -m vllm.entrypoints.openai.api_server` because the `vllm` console script of the CPU package fails on
a version lookup. `build_command` is pure; `start`, `wait_healthy` and `stop` do the process work.

    twin serve                                  # base model + every adapter, on 127.0.0.1:8000
    twin serve -- --tensor-parallel-size 2      # anything after -- goes to vLLM as it is
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from serving.openai_api import OpenAIClient
from twin.config import ServeConfig
from twin.errors import ConfigError, ServingUnavailable

log = logging.getLogger(__name__)

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# The only values vLLM accepts for --max-lora-rank (vllm/config/lora.py, MaxLoRARanks, in 0.32).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VENV_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


def build_command(
    cfg: ServeConfig, adapters: Sequence[tuple[str, str | Path, int]], extra_args: Sequence[str] = ()
) -> list[str]:
    """The server's argv: the base model, its served name, every adapter under its own name, and the extra args
    last (so they can override ours). `--max-lora-rank` is the smallest value vLLM allows that fits every
    adapter and `cfg.max_lora_rank` (room for adapters loaded later). The chat template is passed only when the
    base model has none of its own. Requests are never logged: prompts are private chats.

    >>> build_command(ServeConfig(base_model="/m"), [("mira-v1", "/a/mira-v1", 16)])[3:7]
    ['--model', '/m', '--served-model-name', 'base']
    """
    argv = [cfg.python or find_python(), "-m", SERVER_MODULE]
    argv += ["--model", str(cfg.base_model), "--served-model-name", cfg.served_model_name]
    argv += ["--host", cfg.host, "--port", str(cfg.port), "--dtype", cfg.dtype]
    if cfg.max_model_len:
        argv += ["--max-model-len", str(cfg.max_model_len)]
    if cfg.kv_cache_gib:
        argv += ["--kv-cache-memory-bytes", str(int(cfg.kv_cache_gib * 2**30))]
    argv += lora_args(cfg, adapters)
    if cfg.chat_template and not has_chat_template(cfg.base_model):
        argv += ["--chat-template", cfg.chat_template]
    argv.append("--enable-prefix-caching" if cfg.prefix_caching else "--no-enable-prefix-caching")
    argv.append("--no-enable-log-requests")
    return argv + list(extra_args)


def lora_args(cfg: ServeConfig, adapters: Sequence[tuple[str, str | Path, int]]) -> list[str]:
    """`--enable-lora` and its limits, and `--lora-modules` in vLLM's JSON form: unlike `name=path`, it takes
    any path (the short form is parsed as JSON as soon as the path holds a comma) and records the base model
    as the adapter's `parent` in /v1/models."""
    rank = lora_rank_limit([cfg.max_lora_rank, *(r for _, _, r in adapters)])
    argv = ["--enable-lora", "--max-lora-rank", str(rank), "--max-loras", str(cfg.max_loras)]
    if cfg.max_cpu_loras:
        argv += ["--max-cpu-loras", str(max(cfg.max_cpu_loras, cfg.max_loras))]
    if adapters:
        argv.append("--lora-modules")
        argv += [lora_module(name, path, cfg.served_model_name) for name, path, _ in adapters]
    return argv


def lora_module(name: str, path: str | Path, base_name: str) -> str:
    """One `--lora-modules` value: `lora_module("mira-v1", "/a", "base")` ->
    `'{"name": "mira-v1", "path": "/a", "base_model_name": "base"}'`."""
    return json.dumps({"name": name, "path": str(path), "base_model_name": base_name})


def lora_rank_limit(ranks: Sequence[int]) -> int:
    """The smallest rank vLLM accepts that is at least every rank given: `[8, 12] -> 16`, `[33] -> 64`."""
    need = max(ranks, default=1)
    for allowed in LORA_RANKS:
        if allowed >= need:
            return allowed
    raise ConfigError(f"LoRA rank {need} is above vLLM's largest, {LORA_RANKS[-1]}; retrain with a smaller rank")


def adapter_rank(path: str | Path) -> int:
    """The largest LoRA rank in a PEFT adapter directory (`r`, or a bigger one in its `rank_pattern`)."""
    f = Path(path) / "adapter_config.json"
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{f}: cannot read the adapter's config ({e}); is this a PEFT LoRA directory?") from e
    return max([int(cfg.get("r", 8)), *(int(r) for r in (cfg.get("rank_pattern") or {}).values())])


def has_chat_template(model: str | Path) -> bool:
    """Whether the model ships its own chat template. A hub id cannot be looked at offline and is assumed to."""
    d = Path(model)
    if not d.is_dir():
        return True
    if (d / "chat_template.jinja").exists() or (d / "chat_template.json").exists():
        return True
    try:
        return bool(json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False


def find_python() -> str:
    """The python that runs vLLM: $TWIN_VLLM_PYTHON, else this checkout's .venv-vllm, else `python3` on PATH."""
    if env := os.environ.get("TWIN_VLLM_PYTHON"):
        return env
    return str(VENV_PYTHON) if VENV_PYTHON.exists() else "python3"


def server_env(cfg: ServeConfig, api_key: str | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment. The key goes in VLLM_API_KEY, which vLLM reads when --api-key is absent, so it
    never shows in `ps`. Runtime adapter loading is opt-out, since twin hot-swaps retrained adapters."""
    env = dict(os.environ if base is None else base)
    env.pop("VLLM_API_KEY", None)
    if api_key:
        env["VLLM_API_KEY"] = api_key
    if cfg.runtime_lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    else:
        env.pop("VLLM_ALLOW_RUNTIME_LORA_UPDATING", None)
    return env


def start(
    cfg: ServeConfig,
    adapters: Sequence[tuple[str, str | Path, int]],
    extra_args: Sequence[str] = (),
    api_key: str | None = None,
    log_file: IO | None = None,
) -> subprocess.Popen:
    """Start the server in its own process group (vLLM forks an engine process; `stop` ends both)."""
    argv = build_command(cfg, adapters, extra_args)
    log.info("starting vLLM: %s adapters, base %s, on %s", len(adapters), cfg.base_model, cfg.url)
    try:
        return subprocess.Popen(
            argv,
            env=server_env(cfg, api_key),
            stdout=log_file,
            stderr=subprocess.STDOUT if log_file else None,
            start_new_session=True,
        )
    except OSError as e:
        raise ServingUnavailable(
            f"cannot run {argv[0]} ({e.strerror}); install vLLM (scripts/setup-vllm on a CPU machine) "
            "or set TWIN_VLLM_PYTHON to the python of an environment that has it"
        ) from e


def wait_healthy(
    url: str, timeout: float, proc: subprocess.Popen | None = None, interval: float = 1.0
) -> float:
    """Wait until the server at `url` answers its health check; returns the seconds waited. Gives up early if
    `proc` exits (a bad flag or adapter), and after `timeout` seconds."""
    started = time.monotonic()
    with OpenAIClient(url, timeout=interval * 5, retries=0) as client:
        while True:
            if client.health():
                waited = time.monotonic() - started
                log.info("vLLM healthy at %s after %.1f s", url, waited)
                return waited
            if proc is not None and proc.poll() is not None:
                raise ServingUnavailable(
                    f"vLLM exited with status {proc.returncode} before serving at {url}; its log says why"
                )
            if time.monotonic() - started > timeout:
                raise ServingUnavailable(
                    f"vLLM at {url} was not healthy after {timeout:g} s; check its log, or wait longer "
                    "(a first start on CPU takes a minute or more)"
                )
            time.sleep(interval)


def stop(proc: subprocess.Popen, grace: float = 20.0) -> int:
    """End the server and its engine process: SIGTERM to the group, SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # not our group after all: signal the process alone
        proc.send_signal(sig)

