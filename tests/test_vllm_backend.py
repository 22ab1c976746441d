"""Drafting backends: vLLM against the fake OpenAI server on 127.0.0.1 (tests/fake_openai.py), the in-process
backend on a tiny random Llama with LoRA adapters saved by peft, and `open_backend`'s choice between them."""

from __future__ import annotations

import doctest
import json
import socket
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from fake_openai import FakeOpenAI  # noqa: E402
from helpers import tiny_tokenizer  # noqa: E402
import serving.backends  # noqa: E402
from serving.backend_factory import BackendSettings, base_spec, open_backend  # noqa: E402
from serving.backends import Backend  # noqa: E402
from serving.drafting import DraftRequest, DraftSettings, draft  # noqa: E402
from serving.local_backend import LocalBackend  # noqa: E402
from serving.openai_api import OpenAIClient  # noqa: E402
from serving.vllm_backend import VLLMBackend, stop_strings  # noqa: E402
from twin.chat import Chat, Message, utc  # noqa: E402
from twin.errors import ConfigError, NotFound, ServingUnavailable  # noqa: E402
from twin.models import BaseModelError  # noqa: E402
from twin.prompts import FORMAT_NAME, FORMAT_VERSION  # noqa: E402
from twin.store import ChatKey, Store  # noqa: E402

TOK = tiny_tokenizer()
PROMPT = TOK.apply_chat_template([{"role": "user", "content": "are we still on for saturday?"}],
                                 add_generation_prompt=True, tokenize=False)
PROMPT_IDS = TOK(PROMPT, add_special_tokens=False)["input_ids"]
T0 = 1_710_000_000


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_meta(path: Path, base: str, fmt=(FORMAT_NAME, FORMAT_VERSION)) -> None:
    meta = {"name": path.name, "base_model": base, "prompt_format": {"name": fmt[0], "version": fmt[1]}}
    (path / "twin.json").write_text(json.dumps(meta), encoding="utf-8")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """models/tiny (a random Llama and the tiny tokenizer) and adapters/a-v1, b-v1 (random LoRA weights)."""
    root = tmp_path_factory.mktemp("home")
    base = root / "models" / "tiny"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(TOK), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=TOK.bos_token_id, eos_token_id=TOK.eos_token_id, pad_token_id=TOK.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(base)
    TOK.save_pretrained(base)
    for seed, name in enumerate(("a-v1", "b-v1", "other-v1", "old-v1")):
        torch.manual_seed(seed + 1)
        model = LlamaForCausalLM.from_pretrained(base)
        # Random A and B (peft's init_lora_weights=False), so each adapter changes the output from the start.
        lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                init_lora_weights=False))
        lora.save_pretrained(root / "adapters" / name)
        write_meta(root / "adapters" / name, str(base))
    write_meta(root / "adapters" / "other-v1", "HuggingFaceTB/SmolLM2-1.7B-Instruct")
    write_meta(root / "adapters" / "old-v1", str(base), fmt=(FORMAT_NAME, 0))
    return root


@pytest.fixture
def fake():
    with FakeOpenAI(base_model="base", adapters={"mira-v1": "/srv/adapters/mira-v1"}) as f:
        yield f


def vllm(url: str, adapters_dir: Path | None = None) -> VLLMBackend:
    return VLLMBackend(OpenAIClient(url, timeout=2.0, retries=0), TOK, adapters_dir=adapters_dir)


def test_doctests():
    assert doctest.testmod(serving.backends).failed == 0


# -- vLLM ------------------------------------------------------------------------------------------------------

def test_vllm_sends_token_ids_to_the_adapter_and_stops_at_the_end_of_turn(fake):
    backend = vllm(fake.url)
    assert isinstance(backend, Backend) and backend.name == "vllm"
    texts = backend.complete(PROMPT_IDS, n=4, max_new_tokens=32, temperature=0.7, top_p=0.9, seed=5,
                             adapter="mira-v1")
    assert texts == [f"mira-v1 reply {i}" for i in range(4)]
    [req] = fake.calls("/v1/completions")
    assert req.body == {"model": "mira-v1", "prompt": PROMPT_IDS, "n": 4, "max_tokens": 32, "temperature": 0.7,
                        "top_p": 0.9, "stop": ["<|im_end|>", "<end_of_turn>"], "seed": 5}


def test_vllm_without_an_adapter_asks_the_base_model(fake):
    assert vllm(fake.url).complete(PROMPT_IDS, n=1, max_new_tokens=8, temperature=0.8, top_p=1.0, seed=None,
                                   adapter=None) == ["base reply 0"]
    assert fake.calls("/v1/completions")[0].body["model"] == "base"
    assert "seed" not in fake.calls("/v1/completions")[0].body


def test_stop_strings_are_the_end_of_turn_tokens():
    # eos (<|im_end|> here) and every end-of-turn marker the vocabulary has; the tiny one has them all.
    assert stop_strings(TOK) == ["<|im_end|>", "<end_of_turn>"]
    plain_eos = tiny_tokenizer()
    plain_eos.eos_token = "<|endoftext|>"
    assert stop_strings(plain_eos) == ["<|endoftext|>", "<|im_end|>", "<end_of_turn>"]


def test_vllm_loads_an_adapter_it_does_not_have_and_asks_again(fake, home):
    texts = vllm(fake.url, home / "adapters").complete(PROMPT_IDS, n=2, max_new_tokens=8, temperature=0.8,
                                                       top_p=1.0, seed=1, adapter="a-v1")
    assert texts == ["a-v1 reply 0", "a-v1 reply 1"]
    [load] = fake.calls("/v1/load_lora_adapter")
    assert load.body == {"lora_name": "a-v1", "lora_path": str((home / "adapters" / "a-v1").resolve())}
    assert [r.body["model"] for r in fake.calls("/v1/completions")] == ["a-v1", "a-v1"]


def test_vllm_unknown_or_incompatible_adapters_are_clear_errors(fake, home):
    ask = dict(n=1, max_new_tokens=8, temperature=0.8, top_p=1.0, seed=1)
    with pytest.raises(NotFound, match="restart `twin serve`"):
        vllm(fake.url).complete(PROMPT_IDS, adapter="a-v1", **ask)
    with pytest.raises(NotFound, match="'nope-v1' not found"):
        vllm(fake.url, home / "adapters").complete(PROMPT_IDS, adapter="nope-v1", **ask)
    with pytest.raises(ConfigError, match="prompt format twin-chat v0"):
        vllm(fake.url, home / "adapters").complete(PROMPT_IDS, adapter="old-v1", **ask)
    assert fake.calls("/v1/load_lora_adapter") == []
    fake.base_model = "smol"
    with pytest.raises(NotFound, match="served name"):
        vllm(fake.url).complete(PROMPT_IDS, adapter=None, **ask)


def test_vllm_server_down_is_serving_unavailable():
    backend = vllm(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ServingUnavailable, match="no vLLM server"):
        backend.complete(PROMPT_IDS, n=1, max_new_tokens=8, temperature=0.8, top_p=1.0, seed=1, adapter="a-v1")
    backend.close()


# -- choosing a backend ----------------------------------------------------------------------------------------

def settings(home: Path, url: str, **kw) -> BackendSettings:
    kw.setdefault("base_model", str(home / "models" / "tiny"))
    return BackendSettings(home / "models", home / "adapters", vllm_url=url, health_timeout_s=0.5, retries=0, **kw)


def test_auto_uses_vllm_when_it_answers(fake, home):
    backend = open_backend("auto", settings(home, fake.url))
    assert isinstance(backend, VLLMBackend)
    assert backend.tokenizer.get_vocab() == TOK.get_vocab()
    assert backend.complete(PROMPT_IDS, n=1, max_new_tokens=8, temperature=0.8, top_p=1.0, seed=1,
                            adapter="mira-v1") == ["mira-v1 reply 0"]
    backend.close()


def test_auto_falls_back_to_local_when_no_server_answers(home):
    # No base_model: it is the one the adapter was trained on (twin.json).
    s = settings(home, f"http://127.0.0.1:{closed_port()}", base_model=None, adapter="a-v1")
    assert base_spec(s) == str(home / "models" / "tiny")
    backend = open_backend("auto", s)
    assert isinstance(backend, LocalBackend) and backend.name == "local"
    backend.close()
    forced = open_backend("vllm", settings(home, f"http://127.0.0.1:{closed_port()}"))
    assert isinstance(forced, VLLMBackend)
    with pytest.raises(ServingUnavailable):
        forced.complete(PROMPT_IDS, n=1, max_new_tokens=8, temperature=0.8, top_p=1.0, seed=1, adapter=None)
    with pytest.raises(ConfigError, match="use auto, vllm or local"):
        open_backend("gpu", s)  # type: ignore[arg-type]


# -- in process ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local(home):
    # fp32: merged adapters and the exact tokens of transformers (bf16 projections: the test below)
    backend = LocalBackend(home / "models" / "tiny", home / "adapters", max_adapters=2, precision="fp32")
    yield backend
    backend.close()


def greedy(backend: LocalBackend, adapter: str | None, n: int = 1) -> list[str]:
    return backend.complete(PROMPT_IDS, n=n, max_new_tokens=6, temperature=0, top_p=1.0, seed=0, adapter=adapter)


def test_local_backend_drafts_with_each_adapter_and_the_base(local):
    sampled = local.complete(PROMPT_IDS, n=3, max_new_tokens=6, temperature=1.0, top_p=1.0, seed=3, adapter="a-v1")
    assert len(sampled) == 3 and all(isinstance(t, str) for t in sampled)
    base, a, b = greedy(local, None), greedy(local, "a-v1"), greedy(local, "b-v1")
    assert local.adapters == ["a-v1", "b-v1"] and local._peft.active_adapter == "b-v1"
    assert len({base[0], a[0], b[0]}) == 3  # each adapter changes the model; the base runs without them
    # Switching back gives the same answers: adapters are switched, not stacked.
    assert greedy(local, "a-v1") == a and greedy(local, None) == base
    assert local.adapters == ["b-v1", "a-v1"]


def test_packed_weights_follow_the_adapter_in_use(home, monkeypatch):
    """The local backend packs the weights in use for oneDNN (twin.decoding.PackedLinears) and packs them again
    when another adapter is merged: the same greedy answers as a backend that never packs."""
    import serving.local_backend as local_backend

    packing = LocalBackend(home / "models" / "tiny", home / "adapters", precision="fp32")
    if not packing._packs_ok:
        pytest.skip("this torch has no oneDNN linear ops")
    monkeypatch.setattr(local_backend.PackedLinears, "usable", staticmethod(lambda model, precision="fp32": False))
    plain = LocalBackend(home / "models" / "tiny", home / "adapters", precision="fp32")
    try:
        for adapter in ("a-v1", None, "b-v1", "a-v1"):
            assert greedy(packing, adapter) == greedy(plain, adapter)
            assert packing._packs[0] == adapter and plain._packs is None
    finally:
        packing.close()
        plain.close()


def test_local_backend_drafts_the_tokens_of_plain_transformers_and_peft(local, home):
    """The backend merges the adapter and shares one prefill; greedy, it says what `generate` says through the
    unmerged adapter, before and after switching adapters back and forth (merge, unmerge, merge again)."""
    from peft import PeftModel

    def plain(adapter):
        model = LlamaForCausalLM.from_pretrained(home / "models" / "tiny").eval()
        if adapter:
            model = PeftModel.from_pretrained(model, str(home / "adapters" / adapter)).eval()
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([PROMPT_IDS]), max_new_tokens=6, do_sample=False,
                                 eos_token_id=TOK.eos_token_id, pad_token_id=TOK.pad_token_id)
        return TOK.decode(out[0, len(PROMPT_IDS):].tolist(), skip_special_tokens=True)

    expected = {a: plain(a) for a in ("a-v1", "b-v1", None)}
    assert len(set(expected.values())) == 3
    for adapter in ("a-v1", "b-v1", None, "a-v1", None, "b-v1"):
        assert greedy(local, adapter) == [expected[adapter]]
        assert local._merged == adapter
    unmerged = LocalBackend(home / "models" / "tiny", home / "adapters", precision="fp32")
    unmerged._merges = False  # as with bf16 weights: the adapter beside the weights, never merged
    for adapter in ("a-v1", None, "b-v1"):
        assert greedy(unmerged, adapter) == [expected[adapter]] and unmerged._merged is None
    unmerged.close()


def test_bf16_projections_pack_the_base_once_and_run_each_adapter_beside_it(home):
    """With bf16 projections (`[drafting] precision`, "auto" where the CPU has native bf16) the backend never
    merges: the base is packed once, each adapter runs beside it in fp32 (twin.decoding.merges), and switching
    adapters back and forth gives the same answers, different for each adapter and for the base."""
    backend = LocalBackend(home / "models" / "tiny", home / "adapters", precision="bf16")
    if not backend._packs_ok:
        pytest.skip("this torch has no oneDNN bf16 linear ops")
    try:
        first = {adapter: greedy(backend, adapter) for adapter in ("a-v1", None, "b-v1")}
        packs = backend._packs
        assert len(set(map(tuple, first.values()))) == 3
        for adapter in ("b-v1", "a-v1", None, "a-v1"):
            assert greedy(backend, adapter) == first[adapter]
            assert backend._merged is None and backend._packs is packs  # packed once, never merged
        assert packs[1].precision == "bf16"
    finally:
        backend.close()


def test_precision_comes_from_drafting_precision_and_auto_follows_the_cpu(home, tmp_path):
    from twin.config import load_config
    from twin.decoding import cpu_precision, native_bf16

    assert cpu_precision("auto") == ("bf16" if native_bf16() else "fp32")
    assert cpu_precision("fp32") == "fp32" and cpu_precision("bf16") == "bf16"
    path = tmp_path / "twin.toml"
    path.write_text('[drafting]\nprecision = "fp32"\n')
    assert load_config(path).drafting.precision == "fp32"
    path.write_text('[drafting]\nprecision = "fp16"\n')
    with pytest.raises(ConfigError, match=r"drafting.precision") as e:
        load_config(path)
    assert str(path) in str(e.value)
    backend = open_backend("local", settings(home, f"http://127.0.0.1:{closed_port()}", precision="fp32"))
    try:
        assert backend.precision == "fp32" and backend._merges  # fp32: adapters merged, as before
    finally:
        backend.close()


def test_local_backend_unloads_the_adapter_used_longest_ago(home):
    backend = LocalBackend(home / "models" / "tiny", home / "adapters", max_adapters=1)
    first = greedy(backend, "a-v1")
    greedy(backend, "b-v1")
    assert backend.adapters == ["b-v1"] and "a-v1" not in backend._peft.peft_config
    assert greedy(backend, "a-v1") == first
    backend.close()


def test_local_backend_refuses_foreign_adapters(local):
    with pytest.raises(ConfigError, match="trained on base HuggingFaceTB/SmolLM2-1.7B-Instruct"):
        greedy(local, "other-v1")
    with pytest.raises(ConfigError, match="retrain"):
        greedy(local, "old-v1")
    with pytest.raises(NotFound, match="'nope-v1' not found"):
        greedy(local, "nope-v1")


def test_drafting_through_the_local_backend(local):
    store = Store.open(None)
    with store.transaction():
        store.upsert_chat(Chat("telegram", "2", "personal", "Tomas Berg"))
        store.insert_messages([Message("telegram", "2", "1", "user2", "Tomas Berg", utc(T0), "climb tomorrow?"),
                               Message("telegram", "2", "2", "user1", "Mira", utc(T0 + 60), "yes")])
        store.upsert_names("telegram", {("user2", "Tomas Berg"): (T0, T0), ("user1", "Mira"): (T0, T0)})
        store.set_owner("telegram", "user1", "Mira")
    request = DraftRequest(ChatKey("telegram", "2"), ["are we still on?"], n=2, adapter="a-v1", max_new_tokens=8,
                           temperature=1.0, seed=0)
    result = draft(store, local, request, DraftSettings(), utc(T0 + 120))
    assert len(result.candidates) == 2 and all(c.text and c.messages for c in result.candidates)
    assert result.adapter == "a-v1" and result.prompt_tokens > 20


def test_local_backend_with_a_missing_base_says_what_to_do(tmp_path):
    with pytest.raises(BaseModelError, match="nothing"):
        LocalBackend(tmp_path / "nothing")
