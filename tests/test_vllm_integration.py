"""twin against a real vLLM server (slow: minutes on the CPU): `twin serve` from `.venv-vllm`, a real adapter.

One module-scoped server for every test: a twin home with the sample export, a SmolLM2-135M-Instruct adapter
trained for two steps at a high learning rate (so it clearly differs from the base), and `twin serve` run as
the user runs it, on a free port of 127.0.0.1, stopped with SIGTERM at the end whatever happened. The tests
send prompts rendered by twin's own drafting code and check what the server does with them: the adapter is
served under its versioned name and changes the output, n candidates come back and each stops at the end of
the owner's turn, `twin draft --backend vllm` works end to end, and adapters load at run time.

    scripts/setup-vllm && .venv/bin/pytest tests/test_vllm_integration.py -s
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from serving.drafting import DraftRequest, DraftSettings, build_prompt
from serving.openai_api import OpenAIClient
from serving.vllm_backend import VLLMBackend, load_tokenizer, stop_strings
from serving.vllm_server import VENV_PYTHON, wait_healthy
from twin.models import DEFAULT_NAME
from twin.store import Store

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample_export" / "result.json"
CONTACT = "Tomas Berg"
INCOMING = ("Are we still on for the crag on Saturday?", "I can bring the rope")
# vLLM starts in about 30 s on a 2-core CPU with this model; a slow or busy CI machine may take minutes.
WAIT_S = float(os.environ.get("TWIN_TEST_VLLM_WAIT", "600"))
TRAINING = """\
[training]
lr = 2e-3          # two steps move the adapter well away from the base; at 5e-3 it only learns to end the turn
grad_accum = 1
max_tokens = 512
"""
SERVING = """
[serve]
port = {port}
kv_cache_gib = 1   # vLLM on CPU would otherwise size its KV cache from all of RAM
max_model_len = 2048

[drafting]
backend = "vllm"
"""


def vllm_python() -> Path:
    """The python with vLLM that `twin serve` will find, or a skip that says how to make one."""
    if os.environ.get("TWIN_SKIP_VLLM") == "1":
        pytest.skip("TWIN_SKIP_VLLM=1: no vLLM server in this run")
    python = Path(os.environ.get("TWIN_VLLM_PYTHON") or VENV_PYTHON)
    if not python.exists():
        pytest.skip(f"{python}: no vLLM environment; run scripts/setup-vllm (scripts/test does, unless "
                    "TWIN_SKIP_VLLM=1)")
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    """The subprocesses' environment: this home only, no API key, nothing fetched from the network."""
    out = {**os.environ, "TWIN_HOME": "", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    out.pop("TWIN_VLLM_API_KEY", None)
    return out


def twin(home: Path, *args: str, timeout: float = 1200) -> str:
    proc = subprocess.run([sys.executable, "-m", "twin.cli", "--home", str(home), *args], capture_output=True,
                          text=True, timeout=timeout, env=env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@dataclass(frozen=True)
class Served:
    home: Path
    adapter: Path
    url: str
    client: OpenAIClient
    tokenizer: object
    prompt_ids: list[int]
    started_s: float


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    python = vllm_python()
    home = tmp_path_factory.mktemp("home")
    (home / "twin.toml").write_text(TRAINING, encoding="utf-8")
    twin(home, "ingest", str(SAMPLE))
    started = time.monotonic()
    adapter = Path(twin(home, "train", "--max-steps", "2").strip().splitlines()[-1])
    print(f"\ntrained {adapter.name} (base converted on first use) in {time.monotonic() - started:.0f} s")
    port = free_port()
    (home / "twin.toml").write_text(TRAINING + SERVING.format(port=port), encoding="utf-8")

    log_path = home / "serve.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "twin.cli", "--home", str(home), "serve", "--wait",
                                 str(WAIT_S)], stdout=log_file, stderr=subprocess.STDOUT, env=env(),
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    client = OpenAIClient(url, timeout=300, retries=0)
    try:
        try:
            waited = wait_healthy(url, WAIT_S, proc, interval=2.0)
        except Exception as e:
            raise AssertionError(f"{e}\n--- twin serve log ({python}) ---\n{tail(log_path)}") from e
        print(f"twin serve: vLLM healthy after {waited:.0f} s")
        tokenizer = load_tokenizer(home / "models" / DEFAULT_NAME)
        with Store.open(home / "twin.db") as store:
            chat = store.find_chat(CONTACT)
            request = DraftRequest(chat.key, INCOMING)
            prompt = build_prompt(store, request, tokenizer, DraftSettings(), datetime.now(timezone.utc))
        yield Served(home, adapter, url, client, tokenizer, prompt.ids, waited)
    finally:
        client.close()
        shut_down(proc)


def shut_down(proc: subprocess.Popen) -> None:
    """SIGTERM to `twin serve`, which stops vLLM's process group itself; whatever of vLLM outlives it (a hung
    engine, or `twin serve` killed) is killed by group here, so no server survives the tests."""
    import psutil

    groups = set()
    try:
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(child.pid))
    except psutil.NoSuchProcess:
        pass  # `twin serve` exited already, stopping vLLM in its `finally`
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for group in groups - {os.getpgid(0)}:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone, as it should be


def tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def completion(served: Served, **body) -> dict:
    """A raw /v1/completions answer, for what the client does not expose (finish_reason, vLLM's extensions)."""
    resp = httpx.post(f"{served.url}/v1/completions", json={"prompt": served.prompt_ids, **body}, timeout=300)
    assert resp.status_code == 200, resp.text[:500]
    return resp.json()


def test_models_lists_the_base_and_the_adapter_under_its_versioned_name(served):
    assert served.adapter.name == "twin-v1"
    models = {m["id"]: m for m in httpx.get(f"{served.url}/v1/models", timeout=30).json()["data"]}
    assert set(served.client.models()) == set(models) == {"base", "twin-v1"}
    assert models["twin-v1"]["parent"] == "base"
    assert Path(models["twin-v1"]["root"]) == served.adapter


def test_the_adapter_changes_greedy_output(served):
    stop = stop_strings(served.tokenizer)
    base, adapter = (served.client.completions(m, served.prompt_ids, max_tokens=32, temperature=0, stop=stop)
                     for m in ("base", "twin-v1"))
    assert len(base) == len(adapter) == 1 and base[0].strip() and adapter[0].strip()
    assert base != adapter
    # Greedy decoding is deterministic: the same request gives the same text.
    assert served.client.completions("twin-v1", served.prompt_ids, max_tokens=32, temperature=0, stop=stop) == adapter


def test_n_candidates_each_stop_at_the_end_of_the_owners_turn(served):
    backend = VLLMBackend(served.client, served.tokenizer)
    texts = backend.complete(served.prompt_ids, n=3, max_new_tokens=96, temperature=0.8, top_p=0.95, seed=7,
                             adapter="twin-v1")
    assert len(texts) == 3 and all(t.strip() for t in texts)
    for text in texts:
        assert not any(m in text for m in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
        assert not any(line.strip().casefold() in ("user", "assistant", "system") for line in text.splitlines())

    # With special tokens left in the text, a turn that ran on would show its next header. Greedy, the owner's
    # turn ends well before max_tokens: finish_reason "stop", nothing after it.
    stopped = completion(served, model="twin-v1", max_tokens=96, temperature=0, stop=backend.stop,
                         skip_special_tokens=False)["choices"][0]
    assert stopped["finish_reason"] == "stop", stopped
    assert "<|im_start|>" not in stopped["text"] and "<|im_end|>" not in stopped["text"]
    # The control: told to ignore the end of turn, the same request does run past it into a new turn.
    ran_on = completion(served, model="twin-v1", max_tokens=96, temperature=0, ignore_eos=True,
                        skip_special_tokens=False)["choices"][0]
    assert ran_on["text"].startswith(stopped["text"])
    assert "<|im_end|>" in ran_on["text"][len(stopped["text"]):]


def test_twin_draft_with_the_vllm_backend(served):
    out = json.loads(twin(served.home, "draft", "--contact", CONTACT, "--n", "3", "--json", "--backend", "vllm",
                          *INCOMING, timeout=600))
    texts = [c["text"] for c in out["candidates"]]
    assert len(texts) == 3 and len(set(texts)) == 3 and all(t.strip() for t in texts)
    assert all(c["messages"] and c["text"] == "\n".join(c["messages"]) for c in out["candidates"])
    assert out["adapter"] == "twin-v1" and out["latency_ms"] > 0


def test_adapters_load_at_run_time(served, tmp_path):
    from safetensors.torch import load_file, save_file

    # A second adapter: the first with its B matrices negated (the opposite step), valid for vLLM and different.
    extra = tmp_path / "twin-undo-v1"
    shutil.copytree(served.adapter, extra)
    weights = load_file(str(extra / "adapter_model.safetensors"))
    assert any("lora_B" in k for k in weights)
    save_file({k: (-w if "lora_B" in k else w) for k, w in weights.items()}, str(extra / "adapter_model.safetensors"))

    served.client.load_lora(extra.name, str(extra))
    assert {"base", "twin-v1", "twin-undo-v1"} <= set(served.client.models())
    stop = stop_strings(served.tokenizer)
    undo, first = (served.client.completions(m, served.prompt_ids, max_tokens=32, temperature=0, stop=stop)
                   for m in ("twin-undo-v1", "twin-v1"))
    assert undo[0].strip() and undo != first

    # The vLLM backend loads an adapter the server lacks from the adapters directory, on its first request.
    shutil.copytree(served.adapter, tmp_path / "adapters" / "twin-v7")
    backend = VLLMBackend(served.client, served.tokenizer, adapters_dir=tmp_path / "adapters")
    assert backend.complete(served.prompt_ids, n=1, max_new_tokens=32, temperature=0, top_p=1.0, seed=0,
                            adapter="twin-v7") == first
    assert "twin-v7" in served.client.models()


def test_sigterm_while_vllm_starts_stops_vllm_too(served, tmp_path):
    """systemd or docker may stop `twin serve` during vLLM's minute-long start; vLLM runs in a process group of
    its own, so unless twin serve handles SIGTERM from the start, vLLM is orphaned and keeps the port."""
    import psutil

    home = tmp_path / "home"
    home.mkdir()
    for part in ("models", "adapters"):
        (home / part).symlink_to(served.home / part)
    (home / "twin.toml").write_text(SERVING.format(port=free_port()), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "twin.cli", "--home", str(home), "serve"], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    vllm = None
    try:
        deadline = time.monotonic() + 120
        while vllm is None and time.monotonic() < deadline and proc.poll() is None:
            vllm = next((p for p in psutil.Process(proc.pid).children()
                         if "vllm.entrypoints" in " ".join(p.cmdline())), None)
            time.sleep(0.5)
        assert vllm is not None, "twin serve did not start vLLM within 120 s"
        time.sleep(3)  # vLLM is importing: well before it is healthy
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        _, alive = psutil.wait_procs([vllm], timeout=30)
        assert not alive, f"vLLM (pid {vllm.pid}) outlived twin serve"
    finally:
        shut_down(proc)
        if vllm is not None and vllm.is_running():  # orphaned: shut_down can no longer find it
            os.killpg(vllm.pid, signal.SIGKILL)
