"""A client for an OpenAI-compatible completion server (vLLM), the only module in serving that speaks HTTP.

twin renders every prompt itself (the prompt module in `twin/`), so training and serving see exactly the same
tokens; the client therefore uses the plain `/v1/completions` endpoint with the rendered text or its token
ids, never `/v1/chat/completions`, which would apply the server's own template. An adapter is picked with the
`model` field. Adapters can be loaded and unloaded at run time when the server runs with
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`.

Connect errors, timeouts, 429 and 5xx are retried with exponential backoff; a 4xx is the caller's mistake
and is not. Logs carry endpoints, statuses, sizes and timings only: prompts and outputs are private chats.

    twin draft --contact "Tomas Berg" "are we still on for saturday?"   # with a vLLM server running
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx

from twin.errors import NotFound, ServingUnavailable, TwinError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0


class ServingRejected(TwinError):
    """The server answered but refused the request: a 4xx (a prompt too long, a taken adapter name, a wrong
    key), or the 500 with which vLLM refuses an adapter it cannot serve."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


class OpenAIClient:
    """Talks to one server. `base_url` is the server root (`http://127.0.0.1:8000`; a trailing `/v1` is fine).

    `retries` counts the tries after the first; try k waits `backoff * 2**k` seconds first (or the
    server's Retry-After, if it sends one), at most 30 s.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ):
        self.base_url = root_url(base_url)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
        )

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def health(self) -> bool:
        """True when the server answers its health check now; never retries, never raises."""
        try:
            return self._http.get("/health", timeout=min(self.timeout, 5.0)).status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> list[str]:
        """The names the server answers to: the base model's served name and every loaded adapter."""
        data = self._json(self._request("GET", "/v1/models"))
        return [m["id"] for m in data.get("data", [])]

    def completions(
        self,
        model: str,
        prompt: str | list[int],
        n: int = 1,
        max_tokens: int = 128,
        temperature: float = 0.8,
        top_p: float = 1.0,
        stop: list[str] | None = None,
        seed: int | None = None,
    ) -> list[str]:
        """`n` continuations of a fully rendered prompt (its text, or its token ids), in choice order.

        A text prompt is tokenized by the server without added special tokens: the rendered prompt already
        carries the ones the chat template puts there, as it did in training.
        """
        body: dict[str, Any] = completion_body(model, prompt, n, max_tokens, temperature, top_p, stop, seed)
        started = time.monotonic()
        data = self._json(self._request("POST", "/v1/completions", body))
        texts = choice_texts(data)
        usage = data.get("usage") or {}
        log.info(
            "completion model=%s n=%d prompt_tokens=%s completion_tokens=%s in %.0f ms",
            model, len(texts), usage.get("prompt_tokens"), usage.get("completion_tokens"),
            (time.monotonic() - started) * 1000,
        )
        return texts

    def load_lora(self, name: str, path: str) -> None:
        """Load an adapter directory (a path on the server's machine) under `name`.

        vLLM answers 400 when the name is taken, 404 when the path has no adapter, and 500 when the engine
        refuses the adapter (a rank above --max-lora-rank, DoRA, ...): that 500 is not retried, it would only
        fail again.
        """
        body = {"lora_name": name, "lora_path": str(path)}
        self._lora_request("/v1/load_lora_adapter", body, RETRY_STATUS - {500})
        log.info("loaded adapter %s", name)

    def unload_lora(self, name: str) -> None:
        """Unload the adapter `name`; NotFound if the server has no adapter of that name."""
        self._lora_request("/v1/unload_lora_adapter", {"lora_name": name}, RETRY_STATUS)
        log.info("unloaded adapter %s", name)

    def _lora_request(self, path: str, body: dict, retry_status: frozenset[int]) -> None:
        try:
            self._request("POST", path, body, retry_status)
        except NotFound as e:
            # The route itself is missing (FastAPI's bare "Not Found") when the server runs without runtime loading.
            if str(e).endswith(": 404: Not Found"):
                raise ServingRejected(
                    404,
                    f"{self.base_url} does not load adapters at run time; restart it with "
                    "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (`twin serve` does), or list the adapter at start-up",
                ) from e
            raise

    def _request(
        self, method: str, path: str, body: dict | None = None, retry_status: frozenset[int] = RETRY_STATUS
    ) -> httpx.Response:
        """Send with retries; returns a 2xx response or raises a TwinError that says what to do."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                resp = self._send(method, path, body, attempt)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as e:
                if last:
                    raise self._unavailable(e) from e
                self._wait(attempt, type(e).__name__, None)
                continue
            except httpx.HTTPError as e:  # a malformed URL or an unsupported scheme: retrying cannot help
                raise ServingUnavailable(f"cannot reach {self.base_url}: {e}; check the server URL") from e
            if resp.is_success:
                return resp
            if resp.status_code not in retry_status:
                raise rejected(resp, method, path, self.base_url)
            if last:
                raise ServingUnavailable(
                    f"vLLM server at {self.base_url} answered {resp.status_code} to {method} {path} "
                    f"{self.retries + 1} times; check its log, or use --backend local"
                )
            self._wait(attempt, str(resp.status_code), resp.headers.get("retry-after"))
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, body: dict | None, attempt: int) -> httpx.Response:
        started = time.monotonic()
        content = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        resp = self._http.request(method, path, content=content, headers=headers)
        log.debug(
            "%s %s try %d: %d, %d bytes out, %d bytes in, %.0f ms",
            method, path, attempt + 1, resp.status_code, len(content or b""), len(resp.content),
            (time.monotonic() - started) * 1000,
        )
        return resp

    def _wait(self, attempt: int, why: str, retry_after: str | None) -> None:
        delay = backoff_delay(attempt, self.backoff, retry_after)
        log.warning("%s from %s, retry %d/%d in %.2f s", why, self.base_url, attempt + 1, self.retries, delay)
        time.sleep(delay)

    def _json(self, resp: httpx.Response) -> dict:
        try:
            data = resp.json()
        except ValueError as e:
            raise ServingUnavailable(
                f"{resp.request.url.path} at {self.base_url} did not answer with JSON; "
                "is this the URL of an OpenAI-compatible server such as vLLM?"
            ) from e
        if not isinstance(data, dict):
            raise ServingUnavailable(
                f"{resp.request.url.path} at {self.base_url} answered a JSON {type(data).__name__}, not an object; "
                "is this the URL of an OpenAI-compatible server such as vLLM?"
            )
        return data

    def _unavailable(self, e: httpx.HTTPError) -> ServingUnavailable:
        tries = self.retries + 1
        if isinstance(e, httpx.TimeoutException) and not isinstance(e, httpx.ConnectTimeout):
            return ServingUnavailable(
                f"vLLM server at {self.base_url} did not answer within {self.timeout:g} s ({tries} tries); "
                "it may be overloaded or still starting: wait, raise the timeout, or use --backend local"
            )
        return ServingUnavailable(
            f"no vLLM server at {self.base_url}; start it with `twin serve` or use --backend local"
        )


def root_url(base_url: str) -> str:
    """The server root, whatever the user wrote: `http://h:8000/v1/` -> `http://h:8000`."""
    url = base_url.strip().rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def completion_body(
    model: str,
    prompt: str | list[int],
    n: int,
    max_tokens: int,
    temperature: float,
    top_p: float,
    stop: list[str] | None,
    seed: int | None,
) -> dict[str, Any]:
    """The JSON for /v1/completions. `add_special_tokens` is vLLM's extension (default true there): without
    it the server would put a second BOS before a prompt whose template already starts with one."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "n": n,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
    }
    if isinstance(prompt, str):
        body["add_special_tokens"] = False
    if stop:
        body["stop"] = list(stop)
    if seed is not None:
        body["seed"] = seed
    return body


def choice_texts(data: dict) -> list[str]:
    """The texts of a completion response in choice order: `{"choices": [{"index": 1, "text": "b"},
    {"index": 0, "text": "a"}]}` -> `["a", "b"]`."""
    choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
    return [c.get("text", "") for c in choices]


def backoff_delay(attempt: int, backoff: float, retry_after: str | None = None) -> float:
    """Seconds before retry `attempt + 1`: the server's Retry-After in seconds if it gave one, else
    exponential. `backoff_delay(0, 0.5) -> 0.5`, `backoff_delay(2, 0.5) -> 2.0`, `backoff_delay(0, 0.5, "3")
    -> 3.0`."""
    if retry_after:
        try:
            return min(max(float(retry_after), 0.0), MAX_BACKOFF_S)
        except ValueError:
            pass  # an HTTP date: rare from inference servers; fall back to our own schedule
    return min(backoff * 2**attempt, MAX_BACKOFF_S)


def error_message(resp: httpx.Response) -> str:
    """The server's own error text, shortened: vLLM sends `{"error": {"message": ...}}`, FastAPI
    `{"detail": ...}`, and the LoRA endpoints sometimes plain text."""
    try:
        data = resp.json()
    except ValueError:
        text = resp.text
    else:
        err = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(err, dict):
            text = err.get("message") or err.get("detail") or json.dumps(err)
        else:
            text = str(err)
    text = " ".join(str(text).split())
    return text if len(text) <= 300 else text[:297] + "..."


def rejected(resp: httpx.Response, method: str, path: str, base_url: str) -> TwinError:
    """A refusal as a TwinError: 401/403 say how to give the key, 404 is NotFound, the rest ServingRejected."""
    what = f"{method} {path} at {base_url}: {resp.status_code}"
    if resp.status_code in (401, 403):
        return ServingRejected(
            resp.status_code, f"{what}: the server wants an API key; set TWIN_VLLM_API_KEY to the key it runs with"
        )
    message = f"{what}: {error_message(resp)}"
    if resp.status_code == 404:
        return NotFound(message)
    return ServingRejected(resp.status_code, message)
