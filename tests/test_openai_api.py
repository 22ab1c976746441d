"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1 (tests/fake_openai.py)."""

from __future__ import annotations

import logging
import socket

import pytest

from serving.openai_api import OpenAIClient, ServingRejected, backoff_delay, choice_texts, root_url
from fake_openai import FakeOpenAI
from twin.errors import NotFound, ServingUnavailable

SECRET_PROMPT = "<|im_start|>user\nmeet at the old bridge at nine<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def fake():
    with FakeOpenAI(base_model="smol", adapters={"mira-v1": "/adapters/mira-v1"}) as f:
        yield f


def client(url: str, **kw) -> OpenAIClient:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("retries", 2)
    kw.setdefault("backoff", 0.01)
    return OpenAIClient(url, **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_completion_sends_the_rendered_prompt_and_returns_choices_in_order(fake):
    with client(fake.url) as c:
        texts = c.completions(
            "mira-v1", SECRET_PROMPT, n=3, max_tokens=40, temperature=0.7, top_p=0.9, stop=["<|im_end|>"], seed=5
        )
    assert texts == ["mira-v1 reply 0", "mira-v1 reply 1", "mira-v1 reply 2"]
    [req] = fake.calls("/v1/completions")
    assert req.method == "POST"
    assert req.body == {
        "model": "mira-v1",
        "prompt": SECRET_PROMPT,
        "n": 3,
        "max_tokens": 40,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["<|im_end|>"],
        "seed": 5,
        "add_special_tokens": False,
    }
    assert req.headers["Content-Type"] == "application/json"
    assert "Authorization" not in req.headers


def test_token_id_prompt_is_sent_as_a_list_and_optional_fields_are_left_out(fake):
    with client(fake.url) as c:
        assert c.completions("smol", [1, 9690, 198], n=1) == ["smol reply 0"]
    [req] = fake.calls("/v1/completions")
    assert req.body["prompt"] == [1, 9690, 198]
    assert not {"stop", "seed", "add_special_tokens"} & req.body.keys()


def test_api_key_goes_in_a_bearer_header(fake):
    fake.api_key = "s3cret"
    with client(fake.url, api_key="s3cret") as c:
        assert c.models() == ["smol", "mira-v1"]
    assert fake.requests[-1].headers["Authorization"] == "Bearer s3cret"


def test_wrong_api_key_says_how_to_give_one_and_is_not_retried(fake):
    fake.api_key = "s3cret"
    with client(fake.url, api_key="wrong") as c, pytest.raises(ServingRejected, match="TWIN_VLLM_API_KEY") as e:
        c.models()
    assert e.value.status == 401
    assert len(fake.requests) == 1


def test_503_is_retried_with_growing_backoff_then_succeeds(fake):
    busy = {"error": {"message": "busy", "type": "ServiceUnavailable", "code": 503}}
    fake.script("/v1/completions", (503, busy), (503, busy), (200, None))
    with client(fake.url, retries=3, backoff=0.05) as c:
        assert c.completions("smol", "hi", n=2) == ["smol reply 0", "smol reply 1"]
    times = [r.at for r in fake.calls("/v1/completions")]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.05
    assert times[2] - times[1] >= 0.10


def test_retry_after_from_the_server_is_honoured():
    assert backoff_delay(0, 0.5, "2") == 2.0
    assert backoff_delay(3, 0.5) == 4.0
    assert backoff_delay(20, 0.5) == 30.0
    assert backoff_delay(1, 0.5, "Wed, 21 Oct 2015 07:28:00 GMT") == 1.0


def test_5xx_every_time_gives_serving_unavailable_after_all_tries(fake):
    fake.script("/v1/models", *[(500, {"error": {"message": "boom"}})] * 3)
    with client(fake.url, retries=2) as c, pytest.raises(ServingUnavailable, match="answered 500.*3 times"):
        c.models()
    assert len(fake.calls("/v1/models")) == 3


def test_400_is_not_retried_and_shows_the_servers_reason(fake):
    too_long = {"error": {"message": "maximum context length is 2048 tokens", "type": "BadRequestError"}}
    fake.script("/v1/completions", (400, too_long))
    with client(fake.url) as c, pytest.raises(ServingRejected, match="400: maximum context length") as e:
        c.completions("smol", "hi")
    assert e.value.status == 400
    assert len(fake.calls("/v1/completions")) == 1


def test_unknown_model_is_not_found(fake):
    with client(fake.url) as c, pytest.raises(NotFound, match="`ghost-v1` does not exist"):
        c.completions("ghost-v1", "hi")


def test_timeout_gives_serving_unavailable_after_retries(fake):
    fake.delay_s = 0.5
    with client(fake.url, timeout=0.1, retries=1) as c, pytest.raises(ServingUnavailable, match="did not answer"):
        c.models()
    assert len(fake.calls("/v1/models")) == 2


def test_no_server_names_the_url_and_the_fix():
    url = f"http://127.0.0.1:{closed_port()}"
    with client(url, retries=1) as c, pytest.raises(ServingUnavailable) as e:
        c.completions("smol", "hi")
    assert str(e.value) == f"no vLLM server at {url}; start it with `twin serve` or use --backend local"
    assert "\n" not in str(e.value)


def test_health_is_true_when_up_and_false_when_down(fake):
    with client(fake.url) as c:
        assert c.health() is True
    with client(f"http://127.0.0.1:{closed_port()}") as c:
        assert c.health() is False


def test_load_and_unload_adapters_at_run_time(fake):
    with client(fake.url) as c:
        c.load_lora("mira-v2", "/adapters/mira-v2")
        assert c.models() == ["smol", "mira-v1", "mira-v2"]
        c.unload_lora("mira-v1")
        assert c.models() == ["smol", "mira-v2"]
    assert fake.calls("/v1/load_lora_adapter")[0].body == {"lora_name": "mira-v2", "lora_path": "/adapters/mira-v2"}
    assert fake.calls("/v1/unload_lora_adapter")[0].body == {"lora_name": "mira-v1"}


def test_loading_a_name_twice_is_rejected_and_unloading_an_unknown_one_is_not_found(fake):
    with client(fake.url) as c:
        with pytest.raises(ServingRejected, match="already been loaded"):
            c.load_lora("mira-v1", "/adapters/other")
        with pytest.raises(NotFound, match="'ghost-v1' cannot be found"):
            c.unload_lora("ghost-v1")
    assert len(fake.calls("/v1/load_lora_adapter")) == 1


def test_logs_carry_no_prompt_and_no_output(fake, caplog):
    caplog.set_level(logging.DEBUG, logger="serving.openai_api")
    fake.script("/v1/completions", (503, {"error": {"message": "busy"}}), (200, None))
    with client(fake.url) as c:
        c.completions("mira-v1", SECRET_PROMPT, n=2)
    logged = caplog.text
    assert "503" in logged and "mira-v1" in logged
    assert "old bridge" not in logged and "reply" not in logged


def test_base_url_may_end_in_v1():
    assert root_url("http://h:8000/v1/") == "http://h:8000"
    assert root_url(" http://h:8000 ") == "http://h:8000"


def test_choice_texts_sorts_by_index():
    data = {"choices": [{"index": 1, "text": "b"}, {"index": 0, "text": "a"}]}
    assert choice_texts(data) == ["a", "b"]


def test_an_adapter_the_engine_refuses_is_not_retried(fake):
    refused = {"error": {"message": "LoRA rank 32 is greater than max_lora_rank 16.", "type": "InternalServerError"}}
    fake.script("/v1/load_lora_adapter", (500, refused))
    with client(fake.url) as c, pytest.raises(ServingRejected, match="500: LoRA rank 32 is greater") as e:
        c.load_lora("mira-v3", "/adapters/mira-v3")
    assert e.value.status == 500
    assert len(fake.calls("/v1/load_lora_adapter")) == 1


def test_a_server_without_runtime_loading_says_how_to_enable_it(fake):
    fake.script("/v1/load_lora_adapter", (404, {"detail": "Not Found"}))
    with client(fake.url) as c, pytest.raises(ServingRejected, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
        c.load_lora("mira-v3", "/adapters/mira-v3")


def test_a_server_that_is_not_openai_compatible_is_named(fake):
    fake.script("/v1/models", (200, "<html>router login</html>"))
    with client(fake.url) as c, pytest.raises(ServingUnavailable, match="/v1/models at .* did not answer with JSON"):
        c.models()
