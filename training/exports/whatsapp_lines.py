"""One line of a WhatsApp "Export chat" text: whether it starts a message (its header, which varies by phone and
locale), and what a message's text says it is (a placeholder for media, a deleted message, an edit mark).

The file as a whole (its encoding, date order, chat and message ids) is read by training/exports/whatsapp_txt.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

LRM = "\u200e"
INVISIBLE = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u200b\ufeff"
_STRIP = str.maketrans("", "", INVISIBLE)

_DATE = r"(?P<a>\d{4}|\d{1,2})(?P<sep>[./-])(?P<b>\d{1,2})(?P=sep)(?P<c>\d{4}|\d{1,2})"
# \s also matches U+202F and U+00A0, which newer phones put before AM/PM. Finnish iOS writes "klo".
_TIME = r"(?P<h>\d{1,2})[:.](?P<m>\d{2})(?:[:.](?P<s>\d{2}))?(?:\s*(?P<ampm>[AaPp])\.?\s?[Mm]\.?)?"
# Chinese, Japanese and Korean 12-hour clocks put the half of the day before the time ("下午9:05"): PM or not.
HALVES = {"上午": False, "下午": True, "午前": False, "午後": True, "오전": False, "오후": True}
# Some Android locales put a dot after the time: "2022/12/14, 13:34. - Name: text"; German ones may write "um"
# between date and time ("04.02.17 um 22:45 - Name: text"). iOS without its brackets ("15/12/2025, 10:34:00 Name:
# text", the bare form) counts only with seconds and a sender: read_header checks both.
HEADER = re.compile(
    rf"^[{INVISIBLE}]*(?P<br>\[)?{_DATE},?\s+(?:(?:klo|um)\s+|(?P<half>{'|'.join(HALVES)})\s?)?{_TIME}"
    r"(?(br)\]\s*|(?:(?P<dash>\.?\s+[-–]\s*)|\s+))(?P<rest>.*)$"
)
# A line that starts like a header (a date, then a time within a few characters) but fits no layout above:
# never a message's text, so it is skipped and reported ("04.02.17 um 22:45 - Name: text").
HEADER_LIKE = re.compile(rf"^[{INVISIBLE}]*\[?\s*\d{{1,4}}[./-]\d{{1,2}}[./-]\d{{1,4}},?\s+(?:[^\W\d]{{1,3}}\s+)?"
                         r"\d{1,2}[:.]\d{2}[^\]]{0,16}?(?:\]|\s[-–]\s|[^\W\d]: )")

# The end-to-end encryption notice; iOS writes it under the chat's name. Localised starts and the phrase for
# "end-to-end" in es, pt, de, fr, it, ru, nl, tr, id (the spellings we are sure of; others stay text).
ENCRYPTION = re.compile(
    r"^(?:Messages|Calls|Los mensajes|Mensajes|As mensagens|Mensagens|Nachrichten|Les messages|I messaggi"
    r"|Сообщения|Berichten|Mesajlar|Pesan)\b.*(?:\bend-to-end (?:encrypt|versleuteld)|crittografati end-to-end|secara end-to-end|extremo a extremo|Ende-zu-Ende|ponta a ponta"
    r"|bout en bout|сквозным шифрованием|uçtan uca)",
    re.IGNORECASE,
)
GROUP_EVENT = re.compile(
    r" created group | added | removed | left$|changed the subject|changed this group's|changed the group "
    r"|joined using this group's invite link"
)
EDITED = re.compile(r"\s*<This message was edited>$")
DELETED = re.compile(r"(?:This message was deleted|You deleted this message)(?: by .+)?\.?")
WAITING = re.compile(r"Waiting for this message\..*")
OMITTED = re.compile(
    r"(?:.*\s)?(image|photo|video|video note|GIF|audio|voice message|sticker|document|Contact card) omitted",
    re.IGNORECASE,
)
ATTACHED = re.compile(r"<attached: (?P<name>[^>]+)>|(?P<file>\S.*) \(file attached\)")
MEDIA_OMITTED = "<Media omitted>"
# Android's "<Media omitted>" as localised exports write it, case-folded: en, es, pt-BR, pt-PT, de, fr, it, ru,
# id, tr, nl. Only spellings we are confident of; Hindi and Arabic are left out for want of a verified one.
MEDIA_OMITTED_FORMS = frozenset(f.casefold() for f in (
    MEDIA_OMITTED, "<Multimedia omitido>", "<Arquivo de mídia oculto>", "<Ficheiro multimédia omitido>",
    "<Medien ausgeschlossen>", "<Médias omis>", "<Media omessi>", "<Без медиафайлов>",
    "<Media tidak disertakan>", "<Medya dahil edilmedi>", "<Media weggelaten>",
))
# iOS's "<type> omitted" in es, de, pt-BR and it (case-folded) -> kind; English is OMITTED above.
LOCAL_OMITTED = {f.casefold(): kind for f, kind in (
    ("imagen omitida", "photo"), ("video omitido", "video"), ("audio omitido", "voice"),
    ("sticker omitido", "sticker"), ("GIF omitido", "video"), ("documento omitido", "file"),
    ("Bild weggelassen", "photo"), ("Video weggelassen", "video"), ("Audio weggelassen", "voice"),
    ("Sticker weggelassen", "sticker"), ("GIF weggelassen", "video"), ("Dokument weggelassen", "file"),
    ("imagem ocultada", "photo"), ("vídeo ocultado", "video"), ("áudio ocultado", "voice"),
    ("figurinha omitida", "sticker"), ("GIF omitido", "video"), ("documento ocultado", "file"),
    ("immagine omessa", "photo"), ("video omesso", "video"), ("audio omesso", "voice"),
    ("sticker omesso", "sticker"), ("GIF omesso", "video"), ("documento omesso", "file"),
)}
_MEDIA_ENDINGS = ("omitted", ">", ")", *sorted({f.rsplit(" ", 1)[-1] for f in LOCAL_OMITTED}))
# "This message was deleted" / "You deleted this message" as localised exports write them, case-folded and
# without the final dot: es, pt-BR, de, fr, it, ru, nl, id, tr (spellings we are confident of).
DELETED_FORMS = frozenset(f.casefold() for f in (
    "Se eliminó este mensaje", "Eliminaste este mensaje",
    "Esta mensagem foi apagada", "Você apagou esta mensagem",
    "Diese Nachricht wurde gelöscht", "Du hast diese Nachricht gelöscht",
    "Ce message a été supprimé", "Vous avez supprimé ce message",
    "Questo messaggio è stato eliminato", "Hai eliminato questo messaggio",
    "Данное сообщение удалено", "Вы удалили данное сообщение",
    "Dit bericht is verwijderd", "Je hebt dit bericht verwijderd",
    "Pesan ini telah dihapus", "Anda menghapus pesan ini",
    "Bu mesaj silindi", "Bu mesajı sildiniz",
))
_DELETED_START = frozenset(f[0] for f in DELETED_FORMS) | frozenset(f[0].upper() for f in DELETED_FORMS)
# Forms iOS prefixes with U+200E although a person sent them; any other U+200E-prefixed line is a notice.
SENT_MARKED = re.compile(r"(?:Location|POLL|OPTION):.*")

OMITTED_KINDS = {"image": "photo", "photo": "photo", "video": "video", "video note": "video", "gif": "video",
                 "audio": "voice", "voice message": "voice", "sticker": "sticker"}
# WhatsApp media file names: iOS "00000012-PHOTO-2021-04-15-21-05-33.jpg", Android "IMG-20210415-WA0001.jpg".
NAME_KINDS = {"PHOTO": "photo", "IMG": "photo", "VIDEO": "video", "VID": "video", "GIF": "video",
              "AUDIO": "voice", "PTT": "voice", "AUD": "voice", "STICKER": "sticker", "STK": "sticker"}
EXTENSION_KINDS = {
    **dict.fromkeys(("jpg", "jpeg", "png", "heic", "gif", "webp"), "photo"),
    **dict.fromkeys(("mp4", "mov", "3gp", "webm"), "video"),
    **dict.fromkeys(("opus", "ogg", "m4a", "mp3", "aac", "wav", "amr"), "voice"),
}


@dataclass(frozen=True, slots=True)
class Header:
    """A message's first line, split: the date fields as written, the time, the sender and the text."""

    fields: tuple[str, str, str]
    layout: str  # the date's separator, its year's digits and "[" (iOS) or "-": each layout has its date order
    hour: int
    minute: int
    second: int
    sender: str | None  # None: a notice with no "Name: "
    body: str  # first line of text, invisible marks removed
    marked: bool  # the text began with U+200E (iOS notices and media notes)


def looks_like(text: str) -> bool:
    """Whether text (an export's first bytes, decoded) starts like a WhatsApp export.

    detect() decodes as UTF-8, so a UTF-16 export arrives with a NUL after each ASCII character and its
    byte-order mark as U+FFFD; dropping those recovers the ASCII header.

    >>> looks_like("\\u200e[15/04/2021, 21:05:33] Tomas Berg: hi\\n"), looks_like('{"chats": []}')
    (True, False)
    """
    text = text.replace("\x00", "").lstrip("\ufffd\ufeff")
    for line in text.splitlines()[:50]:
        if line.strip(INVISIBLE + " \t"):
            return read_header(line) is not None
    return False


# A sender glued to a text of punctuation ("John Doe:."): never a word, digit or URL after the colon, and no
# quote or digit before it, so notices ("changed the subject to "a:b"", "call at 10:30") stay notices.
_TIGHT = re.compile(r'(?P<name>[^:"\d]{1,80}):(?P<body>[^\s\w/:"].*)$')


def looks_like_header(line: str) -> bool:
    """Whether a line that is no header starts like one (a date and a time), so it is no message text.

    >>> looks_like_header("04.02.17 um 22:45 - Tomas Berg: hi"), looks_like_header("12/15 at 10:30 works")
    (True, False)
    """
    if line[:1] not in _HEADER_START:
        return False
    if HEADER_LIKE.match(line) is not None:
        return True
    m = HEADER.match(line)  # the bare iOS form with seconds but no sender: a notice, never text
    return m is not None and m["s"] is not None


_HEADER_START = frozenset("0123456789[" + INVISIBLE)


def read_header(line: str) -> Header | None:
    """The header of a message's first line, or None for a continuation line.

    >>> read_header("4/15/21, 9:05\\u202fPM - Tomas Berg: hi")
    Header(fields=('4', '15', '21'), layout='/2-', hour=21, minute=5, second=0, sender='Tomas Berg', body='hi', marked=False)
    """
    m = HEADER.match(line)
    if m is None:
        return None
    hour = int(m["h"])
    if m["ampm"]:
        hour = hour % 12 + (12 if m["ampm"] in "Pp" else 0)
    elif m["half"]:
        hour = hour % 12 + (12 if HALVES[m["half"]] else 0)
    rest = m["rest"]
    bare = not m["br"] and not m["dash"]
    if bare and not m["s"]:
        return None
    name, sep, body = rest.partition(": ")
    if not sep and rest.endswith(":"):  # "Name:" and the text starts on the next line
        name, sep, body = rest[:-1], ":", ""
    elif not sep and (m2 := _TIGHT.match(rest)):  # "Name:." (punctuation straight after the colon)
        name, sep, body = m2["name"], ":", m2["body"]
    sender = plain_name(name) if sep else None
    if sender is not None and not 0 < len(sender) <= 80:  # a notice that happens to contain ": "
        sender = None
    if bare and sender is None:
        return None
    text = clean(body if sender is not None else rest)
    layout = f"{m['sep']}{len(m['c'])}{'[' if m['br'] or bare else '-'}"
    return Header((m["a"], m["b"], m["c"]), layout, hour, int(m["m"]), int(m["s"] or 0), sender, text,
                  body.startswith(LRM))


def service_reason(header: Header) -> str | None:
    """Why a header line is no message ("encryption", "event"), or None for a person's message."""
    if ENCRYPTION.match(header.body):
        return "encryption"
    if header.sender is None:
        return "event"
    if header.marked:
        first = EDITED.sub("", header.body).strip()
        if not (media_kind(first) or is_deleted(first) or SENT_MARKED.fullmatch(first)):
            return "event"
    return None


def media_kind(line: str) -> str | None:
    """The kind a media note stands for, or None when the line is no media note.

    >>> media_kind("<attached: 00000012-PHOTO-2021-04-15-21-05-33.jpg>"), media_kind("GIF omitted")
    ('photo', 'video')
    """
    if not line.endswith(_MEDIA_ENDINGS):  # cheap exit for the common text line
        return None
    folded = line.casefold()
    if folded in MEDIA_OMITTED_FORMS:
        return "file"
    if m := OMITTED.fullmatch(line):
        return OMITTED_KINDS.get(m[1].lower(), "file")
    if m := ATTACHED.fullmatch(line):
        return file_kind(m["name"] or m["file"])
    return LOCAL_OMITTED.get(folded)


def file_kind(name: str) -> str:
    """The kind of a media file, from WhatsApp's naming, else its extension."""
    for part in re.split(r"[-_.]", name):
        if part in NAME_KINDS:
            return NAME_KINDS[part]
    return EXTENSION_KINDS.get(PurePosixPath(name).suffix.lower().lstrip("."), "file")


def content(text: str) -> tuple[str, str, bool]:
    """(kind, text, edited) of a message's full text.

    >>> content("see you <This message was edited>"), content("This message was deleted")
    (('text', 'see you', True), ('placeholder', '', False))
    """
    text, edits = EDITED.subn("", text.rstrip())
    first, _, caption = text.partition("\n")
    first = first.strip()
    if is_deleted(first):
        return "placeholder", "", bool(edits)
    kind = media_kind(first)
    if kind is not None:
        return kind, caption.strip(), bool(edits)
    return "text", text, bool(edits)


def legacy_basis(text: str) -> str | None:
    """For a placeholder twin used to store as text (a lower-case or localised "<Media omitted>", a localised
    deleted-message or iOS "omitted" note), that text: its message id stays what it was, so re-importing an
    export imported before adds it nothing twice. None for every other message.

    >>> legacy_basis("<media omitted>"), legacy_basis("<Media omitted>"), legacy_basis("hi")
    ('<media omitted>', None, None)
    """
    text = EDITED.sub("", text.rstrip())
    first = text.partition("\n")[0].strip()
    if first == MEDIA_OMITTED or OMITTED.fullmatch(first) or ATTACHED.fullmatch(first):
        return None
    if first.startswith(("This", "You", "Waiting")) and (DELETED.fullmatch(first) or WAITING.fullmatch(first)):
        return None
    return text if media_kind(first) or is_deleted(first) else None


def plain_name(raw: str) -> str:
    """A display name with invisible marks removed and whitespace (NBSP, U+202F) made plain spaces."""
    return " ".join(clean(raw).split())


def clean(text: str) -> str:
    """Text without the invisible direction marks exports sprinkle in; ASCII text has none to remove."""
    return text if text.isascii() else text.translate(_STRIP)


def is_deleted(line: str) -> bool:
    """A deleted message's notice, or iOS's note for a message it could not decrypt."""
    if line.startswith(("This", "You", "Waiting")) and (DELETED.fullmatch(line) or WAITING.fullmatch(line)):
        return True
    return line[:1] in _DELETED_START and len(line) < 48 and line.rstrip(".").casefold() in DELETED_FORMS
