"""A fake vLLM OpenAI-compatible server on 127.0.0.1, real HTTP in a thread, for the client's tests.

It follows vLLM's contract where twin depends on it: `/health`, `/v1/models` (the base and its adapters, with
`parent`), `/v1/completions` (n choices), and the runtime LoRA endpoints with vLLM's answers (200 with a
"Success: ..." text, 400 for a name already loaded, 404 for an unknown one). Every request is recorded; a test
can script the next answers for a path (`fake.script("/v1/completions", (503, {...}), (200, None))`; None
means the default answer) or delay them.

    .venv/bin/pytest tests/test_openai_api.py
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict | None
    at: float


@dataclass
class FakeOpenAI:
    base_model: str = "base"
    api_key: str | None = None
    delay_s: float = 0.0
    adapters: dict[str, str] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    scripted: dict[str, list[tuple[int, object]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        # A short poll so that shutdown() returns at once, not after the default half second.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, path: str, *answers: tuple[int, object]) -> None:
        """The next answers for `path`, in order; afterwards it answers as the default again."""
        self.scripted.setdefault(path, []).extend(answers)

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def answer(self, method: str, path: str, body: dict | None) -> tuple[int, object]:
        with self._lock:
            queue = self.scripted.get(path)
            if queue:
                status, payload = queue.pop(0)
                if payload is not None:
                    return status, payload
            return self._default(method, path, body or {})

    def _default(self, method: str, path: str, body: dict) -> tuple[int, object]:
        if path == "/health":
            return 200, ""
        if path == "/v1/models" and method == "GET":
            return 200, self._models()
        if path == "/v1/completions" and method == "POST":
            return self._completion(body)
        if path == "/v1/load_lora_adapter" and method == "POST":
            return self._load(body)
        if path == "/v1/unload_lora_adapter" and method == "POST":
            return self._unload(body)
        return 404, {"detail": "Not Found"}

    def _models(self) -> dict:
        data = [{"id": self.base_model, "object": "model", "root": self.base_model, "parent": None}]
        data += [{"id": n, "object": "model", "root": p, "parent": self.base_model} for n, p in self.adapters.items()]
        return {"object": "list", "data": data}

    def _completion(self, body: dict) -> tuple[int, object]:
        model = body.get("model")
        if model != self.base_model and model not in self.adapters:
            return 404, _error(f"The model `{model}` does not exist.", "NotFoundError", 404)
        n = body.get("n", 1)
        # Out of index order on purpose: the client must sort.
        choices = [{"index": i, "text": f"{model} reply {i}", "finish_reason": "stop"} for i in reversed(range(n))]
        usage = {"prompt_tokens": 7, "completion_tokens": 3 * n, "total_tokens": 7 + 3 * n}
        return 200, {"id": "cmpl-1", "object": "text_completion", "model": model, "choices": choices, "usage": usage}

    def _load(self, body: dict) -> tuple[int, object]:
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return 400, _error("Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput", 400)
        if name in self.adapters:
            return 400, _error(f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput", 400)
        self.adapters[name] = path
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def _unload(self, body: dict) -> tuple[int, object]:
        name = body.get("lora_name")
        if name not in self.adapters:
            return 404, _error(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
        del self.adapters[name]
        return 200, f"Success: LoRA adapter '{name}' removed successfully."


def _error(message: str, kind: str, code: int) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.loads(raw) if raw else None
            fake.requests.append(Recorded(method, self.path, dict(self.headers), body, time.monotonic()))
            if fake.delay_s:
                time.sleep(fake.delay_s)
            if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                return self._send(401, _error("Unauthorized", "Unauthorized", 401))
            self._send(*fake.answer(method, self.path, body))

        def _send(self, status: int, payload: object) -> None:
            text = isinstance(payload, str)
            data = (payload if text else json.dumps(payload)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if text else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
