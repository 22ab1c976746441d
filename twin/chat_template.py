"""How twin meets a tokenizer's chat template: which one (the model's own, else ChatML), what it accepts, and how
text typed in a message is kept from passing for its control tokens.

A template's traits are found once, by rendering probe conversations (`traits_of`): whether it renders a
system message, whether an assistant message may come first, and what closes an assistant message (the text
the model must learn to end a reply with). Used by the prompt format (twin/prompts.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

# ChatML, for base models without a chat template (SmolLM2's own template is this plus a default system prompt).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Traits:
    """What a chat template accepts, found once per template by rendering probe conversations."""

    template: str
    system: bool  # it renders a system message (itself or folded into the first user turn)
    owner_first: bool  # an assistant message may come first (after the system message)
    eot: str  # the text that closes an assistant message, e.g. "<|im_end|>"
    control: re.Pattern  # control-token strings, defused when they occur inside a message


_TRAITS: dict[tuple, Traits] = {}
MARKER = re.compile("\ue000(\\d+)\ue001")


def marker(n: int) -> str:
    return f"\ue000{n}\ue001"


def template_of(tokenizer: Any) -> str:
    t = tokenizer.chat_template
    if isinstance(t, dict):
        t = t.get("default")
    return t or CHATML_TEMPLATE


def apply(tokenizer: Any, template: str, messages: list[dict], generation: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=generation
    )


def traits_of(tokenizer: Any) -> Traits:
    template = template_of(tokenizer)
    key = (template, repr(sorted(tokenizer.special_tokens_map.items())), len(tokenizer))
    if key not in _TRAITS:
        _TRAITS[key] = _probe(tokenizer, template)
    return _TRAITS[key]


def _probe(tokenizer: Any, template: str) -> Traits:
    s, u, a, u2 = ({"role": r, "content": marker(n)} for n, r in enumerate(("system", "user", "assistant", "user")))

    def attempt(messages: list[dict]) -> str | None:
        try:
            return apply(tokenizer, template, messages, False)
        except Exception:  # a template refuses a shape by raising; which exception depends on the template
            return None

    full = attempt([s, u, a])
    system = full is not None and s["content"] in full
    head = [s] if system else []
    owner_first = attempt([*head, a, u]) is not None
    final, middle = attempt([*head, u, a]), attempt([*head, u, a, u2])
    if final is None or middle is None:
        raise ValueError("the chat template cannot render a user message followed by an assistant message")
    tail_final = final.split(a["content"], 1)[1]
    tail_middle = middle.split(a["content"], 1)[1].split(u2["content"], 1)[0]
    eot = os.path.commonprefix([tail_final, tail_middle]).rstrip()
    if not eot:
        raise ValueError("the chat template ends an assistant message with nothing; the model could not learn to stop")
    ids = tokenizer(final, add_special_tokens=False)["input_ids"]
    if ids != template_ids(tokenizer, template, [*head, u, a]):
        raise ValueError("tokenizing the rendered chat differs from the template's own tokenization")
    added = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special or t.content in template]
    control = {*added, *tokenizer.all_special_tokens, "<|im_start|>", "<|im_end|>"} - {""}
    control = sorted(control, key=len, reverse=True)
    return Traits(template, system, owner_first, eot, re.compile("|".join(map(re.escape, control))))


def template_ids(tokenizer: Any, template: str, messages: list[dict]) -> list[int]:
    out = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def defuse(text: str, traits: Traits) -> str:
    """A control token typed inside a message must stay text: a zero-width space after its first character."""
    return traits.control.sub(lambda m: m[0][0] + "\u200b" + m[0][1:], text)
