"""Test helpers: a tiny tokenizer built in the test, no downloads.

`tiny_tokenizer()` trains a byte-level BPE (the kind SmolLM2 and GPT-2 use) on a small synthetic corpus and
wraps it in a transformers fast tokenizer with the chat control tokens added as special tokens. The vocabulary
is small (about 500) so a tiny causal LM built on it stays tiny too:

    tok = tiny_tokenizer()                         # ChatML template, like SmolLM2
    tok = tiny_tokenizer(GEMMA_LIKE, add_bos=True) # no system role, strict alternation, BOS added on encode
    tok = tiny_tokenizer(GEMMA3_LIKE)              # system folded into the first user turn, strict alternation
    tok = tiny_tokenizer(None)                     # no chat template: twin falls back to ChatML
"""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"]

# The ChatML template as SmolLM2-135M-Instruct ships it, including the default system prompt it injects when the
# conversation has none (twin always gives one).
SMOLLM2_LIKE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Gemma (1 and 2) style: BOS in the template, no system role, roles must alternate starting with the user, the
# assistant is called "model", content is trimmed.
GEMMA_LIKE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

CORPUS = [
    "hey are we still on for saturday?",
    "yes! meet at the gym at 10",
    "can you bring the rope, mine is at home",
    "sure thing, see you there",
    "You are Mira chatting with Tomas on Telegram. Today is Saturday 2024-03-09.",
    "Reply as Mira: your own words and style, one message per line.",
    "About Tomas: climbing partner, we talk about routes and weekend trips",
    "Tomas: did anyone book the hut?",
    "Lena: not yet, I can do it tonight",
    "[photo] look at this view",
    "[voice message]",
    "[forwarded] the weather will be great tomorrow",
    "haha ok",
    "lol 😂 that's amazing",
    "what time works for you? 18:30 or 19:00",
    "the tickets were 45.50 each",
    "good morning! coffee later?",
    "I'm running late, sorry",
    "no worries, take your time",
]


@lru_cache(maxsize=None)
def _tokenizer_json(vocab_size: int) -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    return tok.to_str()


def tiny_tokenizer(
    chat_template: str | None = SMOLLM2_LIKE, *, add_bos: bool = False, vocab_size: int = 512
) -> PreTrainedTokenizerFast:
    """A fresh fast tokenizer (byte-level BPE, about `vocab_size` tokens) with chat control tokens.

    `add_bos=True` makes plain `tok(text)` prepend `<bos>` (as Gemma's tokenizer does), which is how a BOS gets
    duplicated when a template that already writes `{{ bos_token }}` is tokenized with special tokens on.
    """
    backend = Tokenizer.from_str(_tokenizer_json(vocab_size))
    if add_bos:
        bos_id = backend.token_to_id("<bos>")
        backend.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos_id)]
        )
    gemma = chat_template is not None and "<start_of_turn>" in chat_template
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>" if gemma else "<|im_start|>",
        eos_token="<end_of_turn>" if gemma else "<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>",)],
    )
    tok.chat_template = chat_template
    return tok

# Gemma 3 style: a system message is folded into the first user turn; roles alternate starting with the user.
GEMMA3_LIKE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') + message['content'] | trim"
    " + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


QUICK_PHRASES = ("sure, see you at eight", "can't tonight, sorry", "maybe tomorrow?", "haha yes",
                 "let me check and get back to you", "sounds good to me", "which crag?", "ok!")


class QuickBackend:
    """A fast drafting backend for relay tests: no model, deterministic replies that differ by seed and index
    (distinct phrases within one call, tagged with the seed, so a regenerated draft shows new text). `delay` seconds per call imitate a model;
    `fail` set to an exception makes the next call raise it once. Records every call's adapter and n."""

    name = "quick"

    def __init__(self, delay: float = 0.0):
        self.tokenizer = tiny_tokenizer()
        self.delay = delay
        self.fail: Exception | None = None
        self.calls: list[dict] = []

    def complete(self, prompt_ids, *, n, max_new_tokens, temperature, top_p, seed, adapter, until=None):
        import time

        self.calls.append(dict(n=n, adapter=adapter, seed=seed, prompt_tokens=len(prompt_ids)))
        if self.fail is not None:
            error, self.fail = self.fail, None
            raise error
        if self.delay:
            time.sleep(self.delay)
        return [f"{QUICK_PHRASES[(seed + i) % len(QUICK_PHRASES)]} {seed % 1000}" for i in range(n)]

    def close(self):
        pass
