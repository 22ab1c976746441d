"""PII scrubbing: emails, payment cards, IBANs and phone numbers replaced by typed placeholders.

Applied to every message before training (`twin train`, unless `training.scrub_pii = false`) and, for adapters
trained that way, to the live context a draft is made from, so the two agree (`twin draft`).
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
# Country, check digits, then groups of four (spaces optional), a short group last.
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])")
_CARD = re.compile(r"(?<![\w+])\d(?:[ -]?\d){12,18}(?!\w)")
# Digits with at most one separator between them: a closing paren, one of " .-", an opening paren.
_PHONE = re.compile(r"(?<![\w+])(?:\+ ?)?\(?\d(?:\)?[ .\-]?\(?\d)+(?!\w)")
_DATE = re.compile(r"(?<!\d)(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})(?!\d)")
_THOUSANDS = re.compile(r"[1-9]\d{0,2}(?:([ .])\d{3})+")


def scrub(text: str) -> str:
    """Replace emails, payment cards, IBANs and phone numbers with typed placeholders.

    Cards must pass the Luhn check (13-19 digits, spaces or dashes allowed), IBANs their mod-97 check. A
    phone number has 8-15 digits after a "+", else 10-15 digits, and is not a date or a number grouped in
    thousands; shorter local numbers stay (times, dates, prices and short numbers must survive).

    >>> scrub("write to mira.s@example.org or call +47 912 34 567")
    'write to <EMAIL> or call <PHONE>'
    >>> scrub("card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, (555) 123-4567")
    'card <CARD>, IBAN <IBAN>, <PHONE>'
    >>> scrub("at 18:30 on 2024-03-05, 3 tickets for 45.50, 1 200 000 people, flight 1234")
    'at 18:30 on 2024-03-05, 3 tickets for 45.50, 1 200 000 people, flight 1234'
    """
    text = _EMAIL.sub("<EMAIL>", text)
    text = _IBAN.sub(lambda m: "<IBAN>" if _iban_ok(m[0]) else m[0], text)
    text = _CARD.sub(lambda m: "<CARD>" if _luhn_ok(m[0]) else m[0], text)
    return _PHONE.sub(lambda m: "<PHONE>" if _phone_like(m[0]) else m[0], text)


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _luhn_ok(s: str) -> bool:
    digits = [int(c) for c in _digits(s)]
    if not 13 <= len(digits) <= 19:
        return False
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(reversed(digits)))
    return total % 10 == 0


def _iban_ok(s: str) -> bool:
    compact = s.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _phone_like(s: str) -> bool:
    n = len(_digits(s))
    if s.startswith("+"):
        return 8 <= n <= 15
    return 10 <= n <= 15 and not _DATE.search(s) and not _THOUSANDS.fullmatch(s)
