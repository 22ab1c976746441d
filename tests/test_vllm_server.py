"""The vLLM launch command, built from the [serve] config and the adapters; no vLLM needed."""

from __future__ import annotations

import json
import sys

import pytest

from serving.vllm_server import (
    adapter_rank,
    build_command,
    has_chat_template,
    lora_rank_limit,
    server_env,
    start,
    stop,
    wait_healthy,
)
from twin.config import ServeConfig
from twin.errors import ConfigError, ServingUnavailable


def flag(argv: list[str], name: str) -> str:
    """The value after a flag, e.g. flag(argv, "--port") -> "8000"."""
    assert argv.count(name) == 1, f"{name} appears {argv.count(name)} times in {argv}"
    return argv[argv.index(name) + 1]


def values(argv: list[str], name: str) -> list[str]:
    """All values after a multi-valued flag, up to the next flag."""
    rest = argv[argv.index(name) + 1 :]
    end = next((i for i, a in enumerate(rest) if a.startswith("--")), len(rest))
    return rest[:end]


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "SmolLM2-135M-Instruct"
    d.mkdir()
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    return d


def cfg(model, **kw) -> ServeConfig:
    return ServeConfig(base_model=str(model), python="/venv/bin/python", **kw)


def test_the_full_command_for_a_base_and_two_adapters(model_dir):
    argv = build_command(
        cfg(model_dir, port=8123, max_model_len=2048, dtype="bfloat16", max_loras=2, kv_cache_gib=1.5),
        [("mira-v1", "/a/mira-v1", 16), ("mira-v2", "/a/mira,v2", 8)],
        [],
    )
    assert argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert flag(argv, "--model") == str(model_dir)
    assert flag(argv, "--served-model-name") == "base"
    assert (flag(argv, "--host"), flag(argv, "--port")) == ("127.0.0.1", "8123")
    assert flag(argv, "--max-model-len") == "2048"
    assert flag(argv, "--dtype") == "bfloat16"
    assert flag(argv, "--kv-cache-memory-bytes") == str(3 * 2**29)
    assert "--enable-lora" in argv
    assert flag(argv, "--max-lora-rank") == "16"
    assert flag(argv, "--max-loras") == "2"
    assert [json.loads(v) for v in values(argv, "--lora-modules")] == [
        {"name": "mira-v1", "path": "/a/mira-v1", "base_model_name": "base"},
        {"name": "mira-v2", "path": "/a/mira,v2", "base_model_name": "base"},
    ]
    assert "--enable-prefix-caching" in argv
    assert "--no-enable-log-requests" in argv
    assert "--api-key" not in argv
    assert "--max-cpu-loras" not in argv
    assert "--kv-cache-memory-bytes" not in build_command(cfg(model_dir), [], [])


@pytest.mark.parametrize(
    "ranks, limit", [([], 16), ([4], 16), ([16], 16), ([17], 32), ([32, 8], 32), ([100], 128), ([300], 320)]
)
def test_max_lora_rank_is_the_smallest_allowed_value_that_fits(model_dir, ranks, limit):
    adapters = [(f"a{i}-v1", f"/a/{i}", r) for i, r in enumerate(ranks)]
    assert flag(build_command(cfg(model_dir), adapters, []), "--max-lora-rank") == str(limit)


def test_the_configured_rank_floor_leaves_room_for_adapters_loaded_later(model_dir):
    argv = build_command(cfg(model_dir, max_lora_rank=64), [("a-v1", "/a", 8)], [])
    assert flag(argv, "--max-lora-rank") == "64"
    assert lora_rank_limit([1]) == 1
    assert lora_rank_limit([2]) == 8


def test_a_rank_vllm_cannot_serve_is_a_config_error():
    with pytest.raises(ConfigError, match="rank 600 is above vLLM's largest, 512"):
        lora_rank_limit([600])


def test_no_adapters_still_enables_lora_for_runtime_loading(model_dir):
    argv = build_command(cfg(model_dir), [], [])
    assert "--enable-lora" in argv and "--lora-modules" not in argv


def test_extra_args_go_through_last_and_unchanged(model_dir):
    extra = ["--tensor-parallel-size", "2", "--max-lora-rank", "64"]
    argv = build_command(cfg(model_dir), [("a-v1", "/a", 16)], extra)
    assert argv[-4:] == extra  # last, so vLLM's argparse lets them override ours


def test_cpu_lora_cache_is_never_below_max_loras(model_dir):
    argv = build_command(cfg(model_dir, max_loras=8, max_cpu_loras=4), [], [])
    assert flag(argv, "--max-cpu-loras") == "8"


def test_prefix_caching_can_be_turned_off(model_dir):
    argv = build_command(cfg(model_dir, prefix_caching=False), [], [])
    assert "--no-enable-prefix-caching" in argv and "--enable-prefix-caching" not in argv


def test_chat_template_only_for_a_base_without_one(model_dir, tmp_path):
    template = str(tmp_path / "chatml.jinja")
    assert flag(build_command(cfg(model_dir, chat_template=template), [], []), "--chat-template") == template

    (model_dir / "chat_template.jinja").write_text("{{ messages }}")
    assert "--chat-template" not in build_command(cfg(model_dir, chat_template=template), [], [])
    hub = cfg("HuggingFaceTB/SmolLM2-135M-Instruct", chat_template=template)
    assert "--chat-template" not in build_command(hub, [], [])


def test_has_chat_template_reads_the_tokenizer_config(tmp_path):
    assert has_chat_template(tmp_path) is False
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    assert has_chat_template(tmp_path) is True


def test_adapter_rank_reads_r_and_rank_pattern(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 16, "rank_pattern": {"q_proj": 32}}))
    assert adapter_rank(tmp_path) == 32
    with pytest.raises(ConfigError, match="adapter_config.json: cannot read"):
        adapter_rank(tmp_path / "missing")


def test_the_api_key_travels_in_the_environment_not_the_argv():
    env = server_env(ServeConfig(base_model="m"), "s3cret", base={"PATH": "/bin", "VLLM_API_KEY": "stale"})
    assert env == {"PATH": "/bin", "VLLM_API_KEY": "s3cret", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    env = server_env(ServeConfig(base_model="m", runtime_lora=False), None, base={"VLLM_API_KEY": "stale"})
    assert env == {}


def test_url_for_a_server_listening_everywhere():
    assert ServeConfig(base_model="m", host="0.0.0.0", port=9000).url == "http://127.0.0.1:9000"


def test_unknown_serve_keys_are_errors():
    with pytest.raises(ValueError, match="max_lora"):
        ServeConfig(base_model="m", max_lora=3)


def test_a_missing_python_says_how_to_install_vllm(model_dir):
    with pytest.raises(ServingUnavailable, match="scripts/setup-vllm"):
        start(ServeConfig(base_model=str(model_dir), python="/nonexistent/python"), [])


def test_wait_healthy_gives_up_when_the_server_process_exits(model_dir):
    proc = start(ServeConfig(base_model=str(model_dir), python=sys.executable), [], ["--no-such-flag"])
    try:
        with pytest.raises(ServingUnavailable, match=r"exited with status [12] before serving"):
            wait_healthy("http://127.0.0.1:9", timeout=30, proc=proc, interval=0.05)
    finally:
        assert stop(proc) in (1, 2)
