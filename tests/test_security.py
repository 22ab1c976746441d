"""Security properties that docs/security.md promises: no message text, names or tokens in the logs (the whole relay
at DEBUG), owner-only files, only the owner commands the bot, `twin forget` leaves no row naming the contact,
and the /privacy text is true.
"""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

import telegram_updates as U
from bot.drafts import ChatRef, Draft, utc
from bot.ledger import Ledger
from bot.cards import privacy_text
from fake_telegram import TOKEN, FakeBotAPI
from helpers import QuickBackend
from relay_harness import BC, OWNER, TOMAS, Clock, Harness
from twin.chat import Message
from twin.cli import _setup_logging, main
from twin.config import Config, TelegramConfig
from twin.paths import Home
from twin.store import Store

SAMPLE = Path(__file__).parent.parent / "examples" / "sample_export" / "result.json"
SECRET_TEXTS = ("my new door code is 4471", "meet me at the old quarry", "sunday works, 9 at the parking?")


async def test_the_relay_at_debug_logs_no_text_names_or_token(tmp_path, caplog):
    _setup_logging(2)  # what `twin -vv run` sets up
    caplog.set_level(logging.DEBUG)
    home = Home(tmp_path / "home").ensure()
    with FakeBotAPI() as fake:
        async with Harness(fake, home, QuickBackend(), Clock()) as h:
            await h.connect()
            h.contact(SECRET_TEXTS[0])
            h.contact(SECRET_TEXTS[1])
            draft = await h.card()
            h.tap(draft.id, "edit")
            await h.wait(lambda c: c.method == "editMessageText")
            h.push(U.private_message(OWNER, SECRET_TEXTS[2], 77))
            await h.wait(lambda c: c.method == "sendMessage" and c.params.get("business_connection_id"))
            h.push(U.command(OWNER, "/status", 78))
            await h.quiet(0.3)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert any(r.levelno == logging.DEBUG and r.name == "bot.relay" for r in caplog.records)  # DEBUG was on
    assert "draft" in logged and "sent" in logged  # and the relay did log its work
    for secret in (*SECRET_TEXTS, U.TOMAS_NAME, U.OWNER_NAME, TOKEN, TOKEN.split(":")[1]):
        assert secret not in logged, f"{secret!r} leaked into the logs"


def test_files_are_owner_only(tmp_path):
    home = Home(tmp_path / "home").ensure()
    store = Store.open(home.db)
    with store.transaction():
        store.insert_messages([Message("telegram", "1", "1", "user1", None, utc(0), "x")], source="live")
    for path in (home.root, home.adapters, home.models, home.runs):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in home.root.glob("twin.db*"):  # the database and its WAL and shared-memory files
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert {p.name for p in home.root.glob("twin.db*")} >= {"twin.db", "twin.db-wal"}
    store.close()


async def test_only_the_owner_commands_the_bot(tmp_path):
    home = Home(tmp_path / "home").ensure()
    stranger = 5550100999
    with FakeBotAPI() as fake:
        async with Harness(fake, home, QuickBackend(), Clock()) as h:
            await h.connect()
            fake.clear()
            for i, cmd in enumerate(("/status", "/pause", f"/auto telegram:{TOMAS} on", f"/forget telegram:{TOMAS}")):
                h.push(U.command(stranger, cmd, 10 + i))
            await h.quiet(0.5)
            to_stranger = [c for c in fake.calls_of("sendMessage") if c.params["chat_id"] == stranger]
            assert [c.params["text"] for c in to_stranger] == ["This is a private assistant bot; it does not take "
                                                               "messages. Sorry!"]
            assert not [c for c in fake.calls if c.params.get("chat_id") == OWNER]  # nothing happened for them
            assert not h.ledger().paused and not h.ledger().auto("telegram", str(TOMAS))
            # A business connection of another account is not ours to act on.
            h.push(U.business_connection("BC-OTHER", stranger))
            await h.quiet(0.3)
            assert h.ledger().connection("BC-OTHER") is None


def _rows_naming(store: Store, needles: list[str]) -> list[tuple[str, str]]:
    hits = []
    tables = [r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        for row in store.conn.execute(f"SELECT * FROM {table}"):
            blob = json.dumps(row, ensure_ascii=False, default=str)
            hits += [(table, n) for n in needles if n in blob]
    return hits


def test_forget_leaves_no_row_that_names_the_contact(tmp_path):
    home = tmp_path / "home"
    runner = CliRunner()
    assert runner.invoke(main, ["--home", str(home), "ingest", str(SAMPLE)]).exit_code == 0
    config = home / "twin.toml"
    config.write_text('[owner]\nname = "Mira"\n\n[contacts."Tomas Berg"]\nnotes = "climbing partner"\n\n'
                      '[contacts."Lena Dahl"]\nnotes = "sister"\n', encoding="utf-8")
    tomas = "5550100102"
    with Store.open(home / "twin.db") as store:
        # Live context and a draft for his chat, and a mention of him by someone else in a group.
        with store.transaction():
            store.insert_messages([Message("telegram", tomas, "900001", f"user{tomas}", "Tomas Berg", utc(1.9e9),
                                           "are you coming?")], source="live")
            store.insert_messages([Message("telegram", "9999", "1", "user5550100103", None, utc(1.9e9),
                                           "ask Tomas Berg about the rope")])
            store.upsert_chat(__import__("twin.chat", fromlist=["Chat"]).Chat("telegram", "9999", "group", "Rope"))
        Ledger(store).create(Draft(id=None, chat=ChatRef("telegram", BC, tomas), contact_id=f"user{tomas}",
                                   answers=("900001",), candidates=("yes",), created_at=utc(1.9e9),
                                   updated_at=utc(1.9e9)), utc(1.9e9))
        before = _rows_naming(store, ["Tomas", tomas])
    assert {t for t, _ in before} >= {"messages", "contacts", "contact_names", "chats", "drafts"}
    result = runner.invoke(main, ["--home", str(home), "forget", "Tomas Berg", "--yes"])
    assert result.exit_code == 0, result.output
    assert "messages" in result.output and "1 notes in twin.toml" in result.output
    with Store.open(home / "twin.db") as store:
        assert _rows_naming(store, ["Tomas", tomas]) == []
        assert store.stats()["messages"] > 0  # everyone else is still there
    text = config.read_text(encoding="utf-8")
    assert "Tomas" not in text and '[contacts."Lena Dahl"]' in text and 'name = "Mira"' in text
    assert "Tomas" not in result.output  # it says what it removed, in counts


def test_privacy_text_is_true(tmp_path):
    home = Home(tmp_path / "home").ensure()
    cfg = Config(telegram=TelegramConfig(owner_id=OWNER))
    text = privacy_text(home, cfg)
    assert str(home.db) in text and str(home.adapters) in text and "/forget" in text
    assert "never for training" in text
    # It says live messages are not training data: the dataset and twin learn leave them out unless the owner
    # opts in (test_training_leaves_live_messages_out_unless_asked, test_learn's opt-in test).
    from training.dataset import DatasetOptions
    assert DatasetOptions().include_live is False
    assert "twin learn" in text and "/auto" in text
    opted = privacy_text(home, Config(telegram=TelegramConfig(owner_id=OWNER, train_on_live=True)))
    assert "are also training data" in opted
    # It says the database is owner-only: it is (test_files_are_owner_only), and logs hold no text (above).
    assert "owner-only" in text and "never message text" in text


def test_training_leaves_live_messages_out_unless_asked(tmp_path):
    from training.dataset import DatasetOptions, build
    from helpers import tiny_tokenizer

    store = Store.open(tmp_path / "twin.db")
    with store.transaction():
        store.upsert_chat(__import__("twin.chat", fromlist=["Chat"]).Chat("telegram", "7", "personal", "Ola"))
        store.set_owner("telegram", "user1", "Mira")
        msgs = [Message("telegram", "7", str(i), "user7" if i % 2 else "user1", None, utc(1e9 + i * 60),
                        f"line {i}") for i in range(6)]
        store.insert_messages(msgs, source="live")
    tok = tiny_tokenizer()
    assert build(store, tok, DatasetOptions()).sessions == 0
    assert build(store, tok, DatasetOptions(include_live=True)).sessions == 1


def test_twin_run_needs_a_token_and_an_owner(tmp_path, monkeypatch):
    monkeypatch.delenv("TWIN_TELEGRAM_TOKEN", raising=False)
    monkeypatch.delenv("TWIN_DISCORD_TOKEN", raising=False)
    import subprocess, sys
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("TWIN_")}
    cmd = [sys.executable, "-c", "from twin.cli import run; run()", "--home", str(tmp_path / "h"), "run"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and "set TWIN_TELEGRAM_TOKEN" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(cmd, capture_output=True, text=True, env={**env, "TWIN_TELEGRAM_TOKEN": "1:x"}, timeout=60)
    assert out.returncode == 2 and "telegram.owner_id is not set" in out.stderr
    assert "1:x" not in out.stderr


async def test_a_refused_telegram_token_is_one_line_without_the_token(tmp_path):
    from twin.cli.relay import Secrets, run_relay as run
    from twin.errors import ConfigError

    home = Home(tmp_path / "home").ensure()
    with FakeBotAPI() as fake:
        cfg = Config(telegram=TelegramConfig(owner_id=OWNER, base_url=fake.base_url))
        with pytest.raises(ConfigError) as e:
            await run(home, cfg, Secrets(telegram="999999:WRONG-SECRET"))
    assert "refused by Telegram" in str(e.value) and "WRONG-SECRET" not in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_discord_live_messages_are_never_training_data(tmp_path):
    from training.dataset import DatasetOptions, build
    from helpers import tiny_tokenizer

    store = Store.open(tmp_path / "twin.db")
    with store.transaction():
        store.upsert_chat(__import__("twin.chat", fromlist=["Chat"]).Chat("discord", "880", "bot", None))
        store.set_owner("discord", "twin:1", "Mira")
        msgs = [Message("discord", "880", str(i), "twin:1" if i % 2 else "770", None, utc(1e9 + i * 60),
                        f"line {i}") for i in range(6)]
        store.insert_messages(msgs, source="live")
    assert build(store, tiny_tokenizer(), DatasetOptions(include_live=True)).sessions == 0
