"""Memory: the few passages of *earlier* conversations most relevant to what a contact just said, for the prompt.

Retrieval asks the store's full-text index (twin/store_search.py, SQLite FTS5) with the rarest words of what the
contact said in the current conversation (`query_terms`: names, places, numbers are rare; "the", "ok" are not),
one word at a time, rarest first, and takes each word's newest hits, each with the
messages just around it in its chat, all
sent before the conversation began (`before`: never the present one, never the future). Passages are added best
first while they fit `max_tokens`; a message is never shown twice; the block reads oldest first.

Scope: "chat" (the default) searches only this chat; "owner" adds the owner's own messages in other chats, alone
(no neighbours: those would be someone else's words). A draft to Bob never quotes what Alice told the owner.

Training (training/dataset.py) and drafting (serving/drafting.py) call the same `recall` with the same query rule
(the contact's lines of the conversation), so the model learns to use memory the way drafting gives it.

    twin recall "Tomas Berg" "how is the dog?"
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from twin.chat import ChatKey, utc
from twin.errors import ConfigError
from twin.prompts import Recalled
from twin.store_search import Hit

WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class MemoryOptions:
    """`max_tokens` 0 turns memory off. `passages` hits at most, each with `context` messages before it and
    `answer` after it (what was said back: a burst is often several messages);
    `max_terms` of the rarest query words are asked; a word in more than `common` of the messages (a share) is
    too common to ask with."""

    max_tokens: int = 224
    scope: str = "chat"
    passages: int = 4
    context: int = 1
    answer: int = 3
    within: int = 3600  # seconds: neighbours come from the hit's own conversation
    max_terms: int = 8
    common: float = 0.0005
    postings: int = 3000  # the words asked with match at most about this many messages in all (the cost)
    live: bool = True

    def __post_init__(self) -> None:
        if self.scope not in ("chat", "owner"):
            raise ConfigError(f"memory.scope must be 'chat' or 'owner', got {self.scope!r}")
        if self.max_tokens < 0:
            raise ConfigError(f"memory.max_tokens must be 0 or more, got {self.max_tokens}")


def fold(word: str) -> str:
    """A word as unicode61 with remove_diacritics 2 indexes it: case folded, accents off.
    `fold("Café")` -> 'cafe'."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """The folded words of a text, as the index splits it: `words("Biscuit's ball, 3x!")` -> ['biscuit', 's',
    'ball', '3x']."""
    return [fold(w) for w in WORD.findall(text)]


def query_terms(store, texts: Sequence[str], opts: MemoryOptions) -> list[str]:
    """The words to ask the index with: those of `texts` that the history holds but not too often, rarest first
    (longest first among equals), at most `opts.max_terms`. The trigram index is asked with whole words of three
    or more characters (case folded, accents kept, as that tokeniser does), a word's count estimated by its
    rarest trigram."""
    # A word in more than `common` of the messages (and more than 20) says little and costs much: a big store's
    # common words have long posting lists. A fixed floor, not a share of a small store: training (which sees the
    # whole store) and drafting (which saw less of it) then ask with the same words.
    limit = max(20, int(store.indexed_documents() * opts.common))
    if store.tokenizer_name == "trigram":
        seen = list(dict.fromkeys(w.casefold() for t in texts for w in WORD.findall(t) if len(w) >= 3))
        grams = store.term_documents(sorted({w[i:i + 3] for w in seen for i in range(len(w) - 2)}), limit)
        docs = {w: min(grams[w[i:i + 3]] for i in range(len(w) - 2)) for w in seen}
    else:
        seen = list(dict.fromkeys(w for t in texts for w in words(t) if len(w) >= 2 or w.isdigit()))
        docs = store.term_documents(seen, limit)
    usable = sorted((w for w in seen if 0 < docs[w] <= limit), key=lambda w: (docs[w], -len(w)))
    out, postings = [], 0
    for w in usable[:opts.max_terms]:
        if out and postings + docs[w] > opts.postings:
            break  # each message a word matches is read and ranked: a draft's cost stays bounded
        out.append(w)
        postings += docs[w]
    return out


def fts_query(terms: Sequence[str]) -> str:
    """An FTS5 query matching any of the terms, each quoted: `fts_query(['biscuit', 'vet'])` -> '"biscuit" OR "vet"'."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate of a text's tokens (about 4 characters each)."""
    return len(text) // 4 + 1


def recall(store, key: ChatKey, texts: Sequence[str], before: datetime, owner: str, opts: MemoryOptions,
           count: Callable[[str], int] = approx_tokens,
           scrub: Callable[[str], str] | None = None) -> tuple[Recalled, ...]:
    """What the twin remembers for `texts` said in chat `key`, from messages sent before `before`, oldest first,
    within `opts.max_tokens` as `count` measures each line. `owner` names the owner's lines; `scrub` is applied
    to every text (what training applied to its samples)."""
    if opts.max_tokens <= 0 or not any(t.strip() for t in texts):
        return ()
    terms = query_terms(store, texts, opts)
    if not terms:
        return ()
    cutoff = int(before.timestamp())
    # The rarest word first, each on its own: a name said once before outranks a message that shares five
    # everyday words with the question (bm25 over all the words at once would rank that one first). A word's
    # hits are equals: the newest first.
    hits: list[Hit] = []
    for term in terms:
        hits += store.search(key, fts_query([term]), cutoff, owner_elsewhere=opts.scope == "owner", live=opts.live,
                             limit=opts.passages)
    chosen: dict[int, Hit] = {}
    seen_texts: set[str] = set()
    used, taken = 0, 0
    for hit in hits:
        if taken >= opts.passages:
            break
        norm = " ".join(words(hit.text))
        if hit.row in chosen or norm in seen_texts:
            continue
        here = (hit.platform, hit.chat_id) == (key.platform, key.chat_id)
        if here:
            older, newer = store.around(hit, cutoff, max(opts.context, opts.answer), opts.live, opts.within)
            older, newer = older[len(older) - opts.context:] if opts.context else [], newer[:opts.answer]
            passage = [m for m in (*older, hit, *newer) if m.row not in chosen and m.text.strip()]
        else:
            passage = [hit]  # the owner's own words in another chat, without the others' around them
        cost = sum(count(_line(m, owner, scrub)) for m in passage)
        if used + cost > opts.max_tokens:
            continue
        used += cost
        taken += 1
        seen_texts.add(norm)
        for m in passage:
            chosen[m.row] = m
    ordered = sorted(chosen.values(), key=lambda m: (m.time, m.row))
    return tuple(Recalled(utc(m.time), _speaker(m, owner), _text(m, scrub)) for m in ordered)


def _speaker(m: Hit, owner: str) -> str:
    return owner if m.from_owner else (m.sender_name or "Someone")


def _text(m: Hit, scrub: Callable[[str], str] | None) -> str:
    text = " ".join(m.text.split())
    return scrub(text) if scrub else text


def _line(m: Hit, owner: str, scrub) -> str:
    return f"[{utc(m.time):%Y-%m-%d}] {_speaker(m, owner)}: {_text(m, scrub)}"


def contact_lines(messages: Sequence, owner_flag: str = "from_owner") -> list[str]:
    """The texts of what the contact (not the owner) said: the query, in training and drafting alike."""
    return [m.text for m in messages if not getattr(m, owner_flag) and m.text.strip()]


def days(memory: Sequence[Recalled]) -> list[str]:
    """The distinct days memory came from, oldest first, as a card shows them: ['3 Mar', '14 Apr']."""
    out: list[str] = []
    for r in memory:
        d = f"{r.time.day} {r.time:%b}"
        if d not in out:
            out.append(d)
    return out
