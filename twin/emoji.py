"""Emoji without the `emoji` package: counting them in a message, and telling an emoji character.

Used by the style profiles of `twin eval` (training.metrics) and of drafting (serving.personas, the guards).
"""

from __future__ import annotations

import re

# Emoji without the `emoji` package: the Unicode blocks that hold emoji (an approximation of the
# Extended_Pictographic property), with skin tones, variation selectors, tag sequences and ZWJ joins folded into
# the emoji they modify, flags as regional-indicator pairs and keycaps as one emoji each.
_PICTO = (
    "\u231a\u231b\u23e9-\u23fa\u2600-\u27bf\u2934\u2935\u2b05-\u2b07\u2b1b\u2b1c\u2b50\u2b55\u3030\u303d"
    "\u3297\u3299\U0001f000-\U0001f0ff\U0001f170-\U0001f19a\U0001f201-\U0001f2ff\U0001f300-\U0001f6ff"
    "\U0001f7e0-\U0001f7ff\U0001f900-\U0001faff"
)
_MODIFIERS = "\ufe0f\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f"
_EMOJI = re.compile(
    "[\U0001f1e6-\U0001f1ff]{2}"
    "|[0-9#*]\ufe0f?\u20e3"
    f"|[{_PICTO}][{_MODIFIERS}]*(?:\u200d[{_PICTO}][{_MODIFIERS}]*)*"
)
_EMOJI_CHAR = re.compile(f"[{_PICTO}\U0001f1e6-\U0001f1ff]")


def count_emoji(text: str) -> int:
    """Emoji in a text; a sequence drawn as one glyph (skin tone, ZWJ family, flag, keycap) counts once.

    >>> count_emoji("ok 👍🏽 🇫🇷 👨‍👩‍👧 :)"), count_emoji("plain")
    (3, 0)
    """
    return len(_EMOJI.findall(text))


def is_emoji(ch: str) -> bool:
    """Whether one character is an emoji (a pictograph or half of a flag).

    >>> is_emoji("🧗"), is_emoji("a")
    (True, False)
    """
    return bool(_EMOJI_CHAR.fullmatch(ch))
