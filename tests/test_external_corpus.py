"""Every export file of the external corpus (../shared/fixtures/external: other projects' real test exports, see
its SOURCES.md) through the real `twin ingest`, its `twin stats --json` (messages, owner_messages, chats,
contacts, platforms) and the stored texts to learn from checked against an independent reading of the same file
by DESIGN.md's counting rules (tests/corpus_reader.py, which imports nothing of twin's); then imported again,
which must add nothing.

A clone without that folder skips this module; CI has it at ../shared beside the clone. Files twin still imports
wrongly are listed in KNOWN, one reason each, and expected to fail (not strictly: a fix that lands makes its case
pass, and its KNOWN entry should then go). Files twin is right to refuse are in EXPECTED_REFUSALS.

    pytest tests/test_external_corpus.py -q
"""

from __future__ import annotations

import doctest
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from corpus_reader import Counts, read_reference, telegram_owner
from twin.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXTERNAL = ROOT.parent / "shared" / "fixtures" / "external"
PLATFORMS = ("telegram", "discord", "whatsapp")

if not EXTERNAL.is_dir():
    pytest.skip(f"{EXTERNAL}: no external export corpus beside this clone (CI checks it out at ../shared)",
                allow_module_level=True)

FILES = sorted(p for platform in PLATFORMS for p in (EXTERNAL / platform).iterdir() if p.is_file())

# File name -> why twin imports it wrongly today (what goes wrong, and its cause). Remove an entry once it passes.
# None today: the two files that mix phones' layouts import whole since each layout reads its own date order.
KNOWN: dict[str, str] = {}

# File name -> why refusing it is right. Checked: a non-zero exit and one line on stderr that names the file.
# Telegram Desktop writes every chat with its `id` (and `type`); these hand-made files have chats without one,
# so twin cannot keep their chats apart or recognise them on a re-import. It refuses them naming the missing key.
EXPECTED_REFUSALS: dict[str, str] = {
    "chatminer-batch-minimal.json": "a hand-made minimal `chats.list` whose chat has only a name and messages: no "
        "`id`, no `type`, messages without ids",
    "chatminer-single-minimal.json": "a top level of only `messages` (no name, `type` or `id`), messages without "
        "ids",
    "mehrdad-persian-fullexport.json": "chats without `id`, of types (`private_chat`, `group_chat`) Telegram "
        "Desktop does not write",
}


def owner(path: Path, ref: Counts) -> tuple[str, list[str]]:
    """The owner's identity, and the `--owner` that says it where the file cannot: a Telegram full export names
    its owner; in a one-to-one Telegram export the owner is whoever is not the peer (the chat's id is the
    peer's); elsewhere the first sender will do: the counts checked here hold whoever the owner is."""
    senders = [s for s, _ in ref.senders]
    if path.parent.name == "telegram":
        data = json.loads(path.read_text(encoding="utf-8"))
        if said := telegram_owner(data):
            return said, []
        if data.get("type") == "personal_chat" and "id" in data:
            senders = [s for s in senders if s != f"user{data['id']}"] or senders
    return senders[0], ["--owner", senders[0]]


def twin(runner: CliRunner, home: Path, *args: str):
    result = runner.invoke(main, ["--home", str(home), *args], catch_exceptions=True)
    assert result.exit_code == 0, f"twin {' '.join(args)}: exit {result.exit_code}: {result.exception}\n{result.output}"
    return result


def imported(home: Path) -> tuple[dict, list[str]]:
    """What `twin stats --json` says, and the stored texts to learn from: text messages and captioned media
    (twin/chat.py), not stickers (their emoji) nor placeholders."""
    stats = json.loads(twin(CliRunner(), home, "stats", "--json").stdout)
    with sqlite3.connect(home / "twin.db") as db:
        texts = sorted(t.strip() for (t,) in db.execute(
            "SELECT text FROM messages WHERE kind NOT IN ('sticker', 'placeholder') AND trim(text) != ''"))
    keys = ("messages", "owner_messages", "chats", "contacts", "platforms")
    return {**{k: stats[k] for k in keys}, "texts": len(texts)}, texts


def expected(path: Path, ref: Counts, owner_id: str) -> dict:
    platforms = {p: ref.messages if p == path.parent.name else 0 for p in PLATFORMS}
    by_sender = dict(ref.senders)
    return {"messages": ref.messages, "owner_messages": by_sender.get(owner_id, 0), "chats": ref.chats,
            "contacts": len(set(by_sender) - {owner_id}), "platforms": platforms, "texts": len(ref.texts)}


def refused(path: Path, home: Path) -> list[str]:
    """Import through the console entry (twin.cli.run: what turns an error into one line on stderr); its
    stderr lines, after asserting that it failed."""
    proc = subprocess.run([sys.executable, "-m", "twin.cli", "--home", str(home), "ingest", str(path)],
                          capture_output=True, text=True, env={**os.environ, "TWIN_HOME": ""})
    assert proc.returncode != 0, f"{path.name}: imported, expected a refusal:\n{proc.stdout}"
    return proc.stderr.strip().splitlines()


def case(path: Path):
    marks = [pytest.mark.xfail(reason=KNOWN[path.name], strict=False)] if path.name in KNOWN else []
    return pytest.param(path, id=path.name, marks=marks)


@pytest.mark.parametrize("path", [case(p) for p in FILES])
def test_import_matches_the_reference_counts(path, tmp_path):
    if path.name in EXPECTED_REFUSALS:
        lines = refused(path, tmp_path)
        assert len(lines) == 1 and path.name in lines[0], lines
        return
    ref = read_reference(path)
    assert ref.messages, f"{path.name}: the reference reader found no messages; the corpus or the reader is wrong"
    owner_id, owner_args = owner(path, ref)
    runner = CliRunner()
    twin(runner, tmp_path, "ingest", str(path), *owner_args)
    counts, texts = imported(tmp_path)
    assert counts == expected(path, ref, owner_id)
    missing, extra = Counter(ref.texts) - Counter(texts), Counter(texts) - Counter(ref.texts)
    assert not missing and not extra, f"texts not stored: {list(missing)[:3]}; stored instead: {list(extra)[:3]}"
    # Re-importing the same export adds nothing twice (DESIGN.md, counting rules).
    twin(runner, tmp_path, "ingest", str(path), *owner_args)
    assert imported(tmp_path) == (counts, texts)


def test_every_listed_file_is_in_the_corpus_and_each_has_one_verdict():
    names = {p.name for p in FILES}
    sources = EXTERNAL / "SOURCES.md"
    listed = set(re.findall(r"^\| ([^|\s]+\.(?:json|txt|zip)) \|", sources.read_text(encoding="utf-8"), re.M))
    assert listed == names, f"{sources} and the files on disk disagree"
    assert set(KNOWN) <= names and set(EXPECTED_REFUSALS) <= names
    assert not set(KNOWN) & set(EXPECTED_REFUSALS)


def test_reference_reader_worked_examples():
    import corpus_reader

    result = doctest.testmod(corpus_reader)
    assert result.attempted >= 4 and result.failed == 0
