"""The CLI end to end, through the real console entry in a subprocess: ingest, stats, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

OWNER = 1001


def run_twin(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "twin.cli", "--home", str(home), *args],
        capture_output=True, text=True, env={**os.environ, "TWIN_HOME": ""},
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def tg_message(mid, sender, t, text, **extra):
    return {"id": mid, "type": "message", "date": "2024-01-01T00:00:00", "date_unixtime": str(t),
            "from": {OWNER: "Mira Solberg", 2002: "Tomas Berg", 3003: "Ada Lind"}[sender],
            "from_id": f"user{sender}", "text": text, "text_entities": [{"type": "plain", "text": text}], **extra}


def tg_chat(cid, messages, type_="personal_chat", name="Tomas Berg"):
    return {"name": name, "type": type_, "id": cid, "messages": messages}


T0 = 1_700_000_000


def full_export(chats):
    return {"about": "Here is the data you requested.",
            "personal_information": {"user_id": OWNER, "first_name": "Mira", "last_name": "Solberg",
                                     "phone_number": "+00 000", "bio": ""},
            "chats": {"about": "", "list": chats}}


@pytest.fixture
def export(tmp_path):
    chats = [
        tg_chat(2002, [
            tg_message(1, 2002, T0, "Are we climbing Saturday?"),
            tg_message(2, OWNER, T0 + 60, "ja ja"),
            tg_message(3, OWNER, T0 + 70, "no stress"),
            {"id": 4, "type": "service", "date": "2024-01-01T00:00:00", "date_unixtime": str(T0 + 80),
             "actor": "Tomas Berg", "actor_id": "user2002", "action": "phone_call"},
            # three days and four minutes later: a new session
            tg_message(5, 2002, T0 + 70 + 3 * 86400 + 240, "Back from the trip?"),
        ]),
        tg_chat(9, [tg_message(1, 3003, T0, "news")], type_="public_channel", name="News"),
    ]
    path = tmp_path / "result.json"
    path.write_text(json.dumps(full_export(chats)), encoding="utf-8")
    return path


def stats(home):
    return json.loads(run_twin(home, "stats", "--json").stdout)


def test_help_is_instant_and_imports_no_torch():
    code = "import sys, twin.cli; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_gets_huge_pages_unless_the_user_said_otherwise(tmp_path):
    """twin's commands set THP_MEM_ALLOC_ENABLE before torch is imported (torch reads it once): the training
    step's large tensors then come on transparent huge pages (docs/benchmarks.md, "Training memory")."""
    code = ("import os, sys\nfrom twin.cli import run\nsys.argv = ['twin', '--home', sys.argv[1], 'stats', '--json']\n"
            "try:\n    run()\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, os.environ.get('THP_MEM_ALLOC_ENABLE'))")
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "h")], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out[-2:] == ["False", "1"]  # set before torch was imported
    kept = subprocess.run([sys.executable, "-c", code, str(tmp_path / "h")], capture_output=True, text=True,
                          env={**env, "THP_MEM_ALLOC_ENABLE": "0"}, check=True).stdout.split()
    assert kept[-1] == "0"


def test_ingest_and_stats(tmp_path, export):
    home = tmp_path / "home"
    out = run_twin(home, "ingest", str(export)).stdout
    assert "telegram" in out
    assert stats(home) == {"messages": 4, "owner_messages": 2, "chats": 1, "contacts": 1, "sessions": 2,
                           "platforms": {"telegram": 4, "discord": 0, "whatsapp": 0}}
    human = run_twin(home, "stats").stdout
    assert "Tomas Berg" in human and "4 messages (2 yours)" in human


def test_reimport_adds_nothing_and_overlap_adds_only_new(tmp_path, export):
    home = tmp_path / "home"
    run_twin(home, "ingest", str(export))
    before = stats(home)
    run_twin(home, "ingest", str(export))
    assert stats(home) == before
    # A later single-chat export of the same chat overlapping the first: two old messages, one new.
    single = tg_chat(2002, [
        tg_message(2, OWNER, T0 + 60, "ja ja"),
        tg_message(5, 2002, T0 + 70 + 3 * 86400 + 240, "Back from the trip?"),
        tg_message(6, OWNER, T0 + 70 + 3 * 86400 + 300, "sick trip"),
    ])
    path = tmp_path / "single.json"
    path.write_text(json.dumps(single), encoding="utf-8")
    run_twin(home, "ingest", str(path))
    after = stats(home)
    assert after["messages"] == before["messages"] + 1
    assert after["owner_messages"] == before["owner_messages"] + 1
    assert after["sessions"] == before["sessions"]


def test_include_channel(tmp_path, export):
    home = tmp_path / "home"
    run_twin(home, "ingest", "--include", "channel", str(export))
    assert stats(home)["chats"] == 2


def test_session_gap_option_reshapes_sessions(tmp_path, export):
    home = tmp_path / "home"
    run_twin(home, "ingest", "--session-gap", str(5 * 86400 / 60), str(export))
    assert stats(home)["sessions"] == 1


def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps(full_export([tg_chat(2002, [tg_message(1, 2002, T0, "hi")] * 3)]))[:-40])
    foreign = tmp_path / "rows.json"
    foreign.write_text(json.dumps({"rows": [1, 2], "version": 3}))
    empty = tmp_path / "empty.json"
    empty.write_text("")
    whatsapp = tmp_path / "WhatsApp Chat with Tomas Berg.txt"
    whatsapp.write_text("12/01/2024, 18:03 - Tomas Berg: Saturday?\n12/01/2024, 18:04 - Mira: ja ja\n")
    return {"truncated": truncated, "foreign": foreign, "empty": empty, "whatsapp_no_owner": whatsapp,
            "missing": tmp_path / "nope.json", "directory": tmp_path}


@pytest.mark.parametrize("case", ["truncated", "foreign", "empty", "whatsapp_no_owner", "missing", "directory"])
def test_bad_input_is_one_line_and_leaves_the_store_unchanged(tmp_path, export, case):
    home = tmp_path / "home"
    run_twin(home, "ingest", str(export))
    before = stats(home)
    path = bad_inputs(tmp_path)[case]
    proc = run_twin(home, "ingest", str(path), check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(path) in lines[0]
    assert stats(home) == before


def test_whatsapp_with_owner_flag(tmp_path):
    home = tmp_path / "home"
    path = bad_inputs(tmp_path)["whatsapp_no_owner"]
    run_twin(home, "ingest", "--owner", "Mira", str(path))
    s = stats(home)
    assert (s["messages"], s["owner_messages"], s["contacts"]) == (2, 1, 1)


def test_bad_file_in_the_middle_keeps_earlier_files(tmp_path, export):
    home = tmp_path / "home"
    bad = bad_inputs(tmp_path)["truncated"]
    proc = run_twin(home, "ingest", str(export), str(bad), check=False)
    assert proc.returncode != 0
    assert stats(home)["messages"] == 4


def test_config_unknown_key_is_named(tmp_path, export):
    home = tmp_path / "home"
    home.mkdir()
    (home / "twin.toml").write_text("[ingest]\nsesion_gap_minutes = 5\n")
    proc = run_twin(home, "ingest", str(export), check=False)
    assert proc.returncode == 2
    assert "ingest.sesion_gap_minutes" in proc.stderr and "twin.toml" in proc.stderr


def test_stats_without_database_says_what_to_do(tmp_path):
    proc = run_twin(tmp_path / "home", "stats", check=False)
    assert proc.returncode != 0 and "twin ingest" in proc.stderr


def test_init_writes_template_once(tmp_path):
    home = tmp_path / "home"
    run_twin(home, "init")
    assert (home / "twin.toml").exists()
    assert run_twin(home, "init", check=False).returncode != 0


def test_recall_prints_what_the_twin_remembers_and_trigram_rebuilds_the_index(tmp_path, export):
    home = tmp_path / "home"
    run_twin(home, "ingest", str(export))
    out = json.loads(run_twin(home, "recall", "Tomas Berg", "climbing again?", "--json").stdout)
    assert [(r["time"], r["speaker"], r["text"]) for r in out] == [
        ("2023-11-14T22:13:20+00:00", "Tomas Berg", "Are we climbing Saturday?"),
        ("2023-11-14T22:14:20+00:00", "Mira Solberg", "ja ja"),
        ("2023-11-14T22:14:30+00:00", "Mira Solberg", "no stress"),
    ]
    text = run_twin(home, "recall", "Tomas Berg", "zebras?").stdout
    assert text.strip() == "nothing remembered: nothing earlier matches"
    (home / "twin.toml").write_text('[memory]\ntokenize = "trigram"\n')
    out = json.loads(run_twin(home, "recall", "Tomas Berg", "climbing again?", "--json").stdout)
    assert out[0]["text"] == "Are we climbing Saturday?"
    (home / "twin.toml").write_text('[memory]\nscope = "everyone"\n')
    bad = run_twin(home, "recall", "Tomas Berg", "x", check=False)
    assert bad.returncode != 0 and "memory.scope" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
