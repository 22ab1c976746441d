"""Base models for `twin train`: resolving --base-model, and the GGUF conversion of the embedded default."""

from __future__ import annotations

import json
import os

import pytest

from twin import models
from twin.models import BaseModelError, load_base, resolve_base_model


def test_a_local_model_directory_is_used_as_it_is(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text("{}")
    assert resolve_base_model(str(tmp_path / "mine"), tmp_path / "models") == tmp_path / "mine"


def test_anything_else_is_a_hub_id():
    assert resolve_base_model("HuggingFaceTB/SmolLM2-135M-Instruct", None) == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("spec, message", [
    ("missing.gguf", "no such GGUF file"),
    ("./nowhere/model", "not a model directory or a .gguf file"),
])
def test_paths_that_are_not_models_are_refused(tmp_path, spec, message):
    with pytest.raises(BaseModelError, match=message):
        resolve_base_model(str(tmp_path / spec) if spec.endswith(".gguf") else spec, tmp_path)


def test_a_directory_without_config_is_refused(tmp_path):
    with pytest.raises(BaseModelError, match="has no config.json"):
        resolve_base_model(str(tmp_path), tmp_path / "models")


def test_an_interrupted_conversion_leaves_no_model(tmp_path, monkeypatch):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")

    def dies_halfway(src, out):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "convert_gguf", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        resolve_base_model(str(gguf), tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_a_dead_conversions_temp_dir_is_cleared_and_a_finished_one_kept(tmp_path, monkeypatch):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    stale = tmp_path / "models" / ".tiny.tmp-999999999"
    stale.mkdir(parents=True)

    def converts(src, out):
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"from": src.name}))

    monkeypatch.setattr(models, "convert_gguf", converts)
    assert resolve_base_model(str(gguf), tmp_path / "models") == tmp_path / "models" / "tiny"
    assert not stale.exists()
    monkeypatch.setattr(models, "convert_gguf", lambda src, out: pytest.fail("converted twice"))
    assert resolve_base_model(str(gguf), tmp_path / "models") == tmp_path / "models" / "tiny"


def test_an_unreachable_hub_id_says_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network here or in CI
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(BaseModelError) as e:
        load_base("nobody-twin-test/not-a-model", tmp_path / "models", device="cpu")
    assert str(e.value) == ("nobody-twin-test/not-a-model: could not be downloaded; pass a local directory or "
                            "GGUF file, or check your network")


def test_qlora_without_cuda_is_refused_before_loading():
    import torch

    with pytest.raises(BaseModelError, match="needs CUDA and bitsandbytes"):
        models._four_bit("cpu", torch.float32)


@pytest.mark.slow
def test_the_embedded_default_converts_once_and_stops_at_end_of_turn(tmp_path, monkeypatch):
    import torch

    model, tokenizer = load_base(None, tmp_path)
    converted = tmp_path / "SmolLM2-135M-Instruct"
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in converted.iterdir()}
    assert "quantization_config" not in json.loads((converted / "config.json").read_text())
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>assistant" in tokenizer.chat_template
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id == [end]
    assert list(tmp_path.iterdir()) == [converted]  # no temp directory left behind

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Say hello in three words."}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=80, do_sample=False)
    reply = out[0, prompt["input_ids"].shape[1]:].tolist()
    assert reply[-1] == end and len(reply) < 80 and end not in reply[:-1]

    weights = converted / "model.safetensors"
    before = os.stat(weights).st_mtime_ns
    monkeypatch.setattr(models, "convert_gguf", lambda src, out: pytest.fail("converted a second time"))
    again, _ = load_base(None, tmp_path)
    assert os.stat(weights).st_mtime_ns == before
    for name, tensor in again.state_dict().items():
        torch.testing.assert_close(tensor, model.state_dict()[name])
