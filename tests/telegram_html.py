"""Telegram's HTML formatting, parsed as Telegram parses it, for the fake Bot API server (tests/fake_telegram.py).

A port of tdlib's `parse_html` (td/telegram/MessageEntity.cpp), which the Bot API server runs for parse_mode
"HTML" (telegram-bot-api, Client::get_formatted_text): the same tags, the same errors with the same byte offsets
into the UTF-8 text. The visible text and its MessageEntity objects come back; lengths are Telegram's, in UTF-16
code units (an emoji outside the BMP counts 2).

    >>> parse_html('<b>Tomas</b> &amp; <i>Mira</i> 😀')
    ('Tomas & Mira 😀', [{'type': 'bold', 'offset': 0, 'length': 5}, {'type': 'italic', 'offset': 8, 'length': 4}])
    >>> utf16_length('Tomas & Mira 😀')
    15
    >>> print(refusal('see <br> you', "HTML"))
    Bad Request: can't parse entities: Unsupported start tag "br" at byte offset 4
    >>> print(refusal('<b>bold <i>both</b></i>', "HTML"))
    Bad Request: can't parse entities: Unmatched end tag at byte offset 15, expected "</i>", found "</b>"

    .venv/bin/pytest tests/test_fake_telegram.py
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# tdlib, parse_html: the tags it knows; any other is "Unsupported start tag".
TAGS = frozenset({
    "a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "tg-spoiler", "tg-emoji", "tg-time", "span",
    "pre", "code", "blockquote",
})
SIMPLE = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
    "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "tg-spoiler": "spoiler",
    "span": "spoiler",  # only <span class="tg-spoiler"> gets this far
}
# tdlib, MessageEntity::get_type_priority: how entities over the same span are ordered.
PRIORITY = {
    "blockquote": 0, "expandable_blockquote": 0, "pre": 11, "code": 20, "date_time": 30, "text_link": 49,
    "bold": 90, "italic": 91, "underline": 92, "strikethrough": 93, "spoiler": 94, "custom_emoji": 99,
}
NAMED = {b"lt": "<", b"gt": ">", b"amp": "&", b"quot": '"'}
SPACE = frozenset(b" \t\r\n\0\v")  # td::is_space; the NUL that ends the text counts as one
SURROGATES = (
    "Text contains invalid Unicode characters after decoding HTML entities, check for unmatched surrogate code units"
)
LETTERS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
DIGITS = frozenset(b"0123456789")
HEX_DIGITS = DIGITS | frozenset(b"abcdefABCDEF")
NAME_TOKEN = LETTERS | DIGITS | frozenset(b".-")
INT64 = re.compile(r"-?[0-9]+")


class FormattingError(ValueError):
    """Telegram's refusal of a formatted text; str() is the description of its answer."""


def refusal(text: str, parse_mode: str | None) -> str | None:
    """The description Telegram refuses `text` with under `parse_mode`, or None when it takes it."""
    try:
        formatted(text, parse_mode)
    except FormattingError as error:
        return str(error)
    return None


def formatted(text: str, parse_mode: str | None) -> tuple[str, list[dict]]:
    """The visible text and entities of a text as the Bot API server reads it (Client::get_formatted_text)."""
    mode = (parse_mode or "").lower()
    if not text or mode in ("", "none"):
        return text, []
    if mode == "html":
        try:
            return parse_html(text)
        except FormattingError as error:
            # tdlib prefixes "Can't parse entities: "; the Bot API adds "Bad Request: " and lowers the first letter.
            raise FormattingError(f"Bad Request: can't parse entities: {error}") from None
    if mode in ("markdown", "markdownv2"):
        # Not parsed: the relay formats only with HTML, so a Markdown text is taken as it is, without entities.
        return text, []
    raise FormattingError("Bad Request: unsupported parse_mode")


def utf16_length(text: str) -> int:
    """Telegram's length of a text: UTF-16 code units, as its entity offsets count.

    >>> utf16_length("ok"), utf16_length("😀"), utf16_length("é")
    (2, 2, 1)
    """
    return len(text.encode("utf-16-le")) // 2


def parse_html(html: str) -> tuple[str, list[dict]]:
    """The visible text and MessageEntity dicts of `html`; FormattingError with tdlib's message when malformed.

    One deliberate difference from tdlib: an `&` that starts no entity is refused here ("Character entity
    expected at byte offset N"), where tdlib keeps it as text. The Bot API asks for it ("All <, > and & symbols
    that are not a part of a tag or an HTML entity must be replaced with the corresponding HTML entities",
    Formatting options), and a text that relies on the leniency breaks as soon as a `<` comes along.

    >>> parse_html("<pre><code class=\\"language-python\\">x = 1</code></pre>")
    ('x = 1', [{'type': 'pre', 'offset': 0, 'length': 5, 'language': 'python'}])
    >>> parse_html("&lt;3 &#128512; &#x1F600;")
    ('<3 😀 😀', [])
    """
    return _HtmlParser(html).parse()


@dataclass
class _Open:
    """A start tag whose end tag is still to come."""

    tag: str
    argument: str
    date: int
    offset: int  # UTF-16 offset of the entity in the visible text
    start: int  # byte offset of the entity in the visible text, for <a> without href


@dataclass
class _Entity:
    type: str
    offset: int
    length: int
    fields: dict = field(default_factory=dict)
    language: str = ""  # a <code class="language-...">'s, kept until a <pre> around it takes it

    def as_dict(self) -> dict:
        return {"type": self.type, "offset": self.offset, "length": self.length} | self.fields


class _HtmlParser:
    """tdlib's parse_html, line by line: a scan over the UTF-8 bytes, NUL-terminated as tdlib reads them."""

    def __init__(self, html: str):
        self.text = html.encode("utf-8") + b"\0"
        self.end = len(self.text) - 1
        self.out = bytearray()
        self.utf16 = 0
        self.opened: list[_Open] = []
        self.entities: list[_Entity] = []
        self.surrogate = False

    def parse(self) -> tuple[str, list[dict]]:
        text, i = self.text, 0
        while i < self.end:
            c = text[i]
            if c == ord("&"):
                i = self._character(i)
            elif c != ord("<"):
                if c & 0xC0 != 0x80:  # the first byte of a character
                    self.utf16 += 2 if c >= 0xF0 else 1  # 4 bytes in UTF-8: a surrogate pair in UTF-16
                self.out.append(c)
                i += 1
            elif text[i + 1] == ord("/"):
                i = self._end_tag(i)
            else:
                i = self._start_tag(i)
        if self.opened:
            raise FormattingError(f'Can\'t find end tag corresponding to start tag "{self.opened[-1].tag}"')
        for entity in self.entities:
            entity.language = ""  # a <code> outside <pre> has no language
        self.entities.sort(key=lambda e: (e.offset, -e.length, PRIORITY[e.type]))
        if self.surrogate:
            raise FormattingError(SURROGATES)
        return self.out.decode("utf-8"), [entity.as_dict() for entity in self.entities]

    def _character(self, i: int) -> int:
        decoded = _decode_entity(self.text, i)
        if decoded is None:
            raise FormattingError(f"Character entity expected at byte offset {i}")
        code, after = decoded
        self.surrogate |= 0xD800 <= code <= 0xDFFF
        self.out += chr(code).encode("utf-8", "surrogatepass")
        self.utf16 += 2 if code > 0xFFFF else 1
        return after

    def _start_tag(self, begin: int) -> int:
        text, i = self.text, begin + 1
        while text[i] not in SPACE and text[i] != ord(">"):
            i += 1
        if text[i] == 0:
            raise FormattingError(f"Unclosed start tag at byte offset {begin}")
        tag = _lower(text[begin + 1:i])
        if tag not in TAGS:
            raise FormattingError(f'Unsupported start tag "{tag}" at byte offset {begin}')
        argument, date = "", 0
        while text[i] != ord(">"):
            while text[i] != 0 and text[i] in SPACE:
                i += 1
            if text[i] == ord(">"):
                break
            name_start = i
            while text[i] not in SPACE and text[i] not in b"=>/\"'":
                i += 1
            name = text[name_start:i]
            if not name:
                raise FormattingError(f'Empty attribute name in the tag "{tag}" at byte offset {begin}')
            while text[i] != 0 and text[i] in SPACE:
                i += 1
            if text[i] != ord("="):  # an attribute without a value
                if text[i] == 0:
                    raise FormattingError(f'Unclosed start tag "{tag}" at byte offset {begin}')
                if tag == "blockquote" and name == b"expandable":
                    argument = "1"
                continue
            i += 1
            while text[i] != 0 and text[i] in SPACE:
                i += 1
            if text[i] == 0:
                raise FormattingError(f'Unclosed start tag "{tag}" at byte offset {begin}')
            value, i = self._attribute_value(i)
            if text[i] == 0:
                raise FormattingError(f"Unclosed start tag at byte offset {begin}")
            if tag == "a" and name == b"href":
                argument = value
            elif tag == "code" and name == b"class" and value.startswith("language-"):
                argument = value[len("language-"):]
            elif tag == "span" and name == b"class" and value.startswith("tg-"):
                argument = value[len("tg-"):]
            elif tag == "tg-emoji" and name == b"emoji-id":
                argument = value
            elif tag == "blockquote" and name == b"expandable":
                argument = "1"
            elif tag == "tg-time" and name == b"unix":
                date = int(value) if value.isdigit() else 0
            elif tag == "tg-time" and name == b"format":
                argument = value  # not checked, as FormattedDate::get_formatted_date would
        if tag == "span" and argument != "spoiler":
            raise FormattingError(f'Tag "span" must have class "tg-spoiler" at byte offset {begin}')
        self.opened.append(_Open(tag, argument, date, self.utf16, len(self.out)))
        return i + 1

    def _attribute_value(self, i: int) -> tuple[str, int]:
        text = self.text
        if text[i] not in b"\"'":
            # "A name token (a sequence of letters, digits, periods, or hyphens). Name tokens are not case sensitive."
            start = i
            while text[i] in NAME_TOKEN:
                i += 1
            if text[i] not in SPACE and text[i] != ord(">"):
                raise FormattingError(f"Unexpected end of name token at byte offset {start}")
            return _lower(text[start:i]), i
        quote = text[i]
        i += 1
        value = bytearray()
        while text[i] != quote and text[i] != 0:
            # In a quoted value tdlib decodes the entities it knows and keeps any other `&`: URLs are full of them.
            if text[i] == ord("&") and (decoded := _decode_entity(text, i)) is not None:
                value += chr(decoded[0]).encode("utf-8", "surrogatepass")
                i = decoded[1]
                continue
            value.append(text[i])
            i += 1
        if text[i] == quote:
            i += 1
        return value.decode("utf-8", "replace"), i

    def _end_tag(self, begin: int) -> int:
        if not self.opened:
            raise FormattingError(f"Unexpected end tag at byte offset {begin}")
        text, i = self.text, begin + 2
        while text[i] not in SPACE and text[i] != ord(">"):
            i += 1
        end_tag = _lower(text[begin + 2:i])
        while text[i] in SPACE and text[i] != 0:
            i += 1
        if text[i] != ord(">"):
            raise FormattingError(f"Unclosed end tag at byte offset {begin}")
        opened = self.opened[-1]
        if end_tag and end_tag != opened.tag:  # "</>" closes whatever is open
            raise FormattingError(
                f'Unmatched end tag at byte offset {begin}, expected "</{opened.tag}>", found "</{end_tag}>"'
            )
        if self.utf16 > opened.offset:  # an element with no text makes no entity
            self._close(opened, self.utf16 - opened.offset)
        self.opened.pop()
        return i + 1

    def _close(self, opened: _Open, length: int) -> None:
        tag, argument, offset = opened.tag, opened.argument, opened.offset
        last = self.entities[-1] if self.entities else None
        same_span = last is not None and (last.offset, last.length) == (offset, length)
        if tag in SIMPLE:
            self.entities.append(_Entity(SIMPLE[tag], offset, length))
        elif tag == "tg-emoji":
            if not INT64.fullmatch(argument) or not -(2**63) <= int(argument) < 2**63 or int(argument) == 0:
                raise FormattingError("Invalid custom emoji identifier specified")
            self.entities.append(_Entity("custom_emoji", offset, length, {"custom_emoji_id": argument}))
        elif tag == "tg-time":
            if opened.date > 0:
                fields = {"unix_time": opened.date} | ({"date_time_format": argument} if argument else {})
                self.entities.append(_Entity("date_time", offset, length, fields))
        elif tag == "a":
            # tdlib also checks the URL (LinkManager::get_checked_link) and makes tg://user?id= a text_mention;
            # the fake takes any URL as a text_link.
            url = argument or self.out[opened.start:].decode("utf-8", "replace")
            if url:
                self.entities.append(_Entity("text_link", offset, length, {"url": url}))
        elif tag == "pre":
            if same_span and last.type == "code" and last.language:
                last.type, last.fields = "pre", {"language": last.language}
            else:
                self.entities.append(_Entity("pre", offset, length))
        elif tag == "code":
            if same_span and last.type == "pre" and argument:
                last.fields = {"language": argument}
            else:
                self.entities.append(_Entity("code", offset, length, language=argument))
        else:  # blockquote
            kind = "expandable_blockquote" if argument else "blockquote"
            self.entities.append(_Entity(kind, offset, length))


def _decode_entity(text: bytes, pos: int) -> tuple[int, int] | None:
    """(code point, position after it) of the character entity at text[pos] == '&', as tdlib's
    decode_html_entity reads it (the `;` is optional), or None when it is none of those tdlib knows."""
    end = pos + 1
    if text[end] == ord("#"):
        end += 1
        hexadecimal = text[end] == ord("x")  # lower-case only, as in tdlib
        end += hexadecimal
        start = end
        while text[end] in (HEX_DIGITS if hexadecimal else DIGITS):
            end += 1
        code = int(text[start:end], 16 if hexadecimal else 10) if end > start else 0
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return None
    else:
        while text[end] in LETTERS:
            end += 1
        if text[pos + 1:end] not in NAMED:
            return None
        code = ord(NAMED[text[pos + 1:end]])
    return code, end + 1 if text[end] == ord(";") else end


def _lower(name: bytes) -> str:
    """td::to_lower: ASCII letters only, as tdlib lowers tag names."""
    return name.decode("utf-8", "replace").translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
