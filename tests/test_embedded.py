"""The embedded default end to end (slow: minutes on the CPU): the sample export, SmolLM2-135M-Instruct
converted from its packaged GGUF, 16 LoRA steps (about three minutes), the held-out evaluation, and a draft.

The issue's bars: the adapter at most halves the held-out perplexity of the owner's turns, the classifier AUC
falls versus the base, and `twin draft --json` gives three distinct non-empty candidates with no server.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample_export" / "result.json"


def twin(home, *args, timeout=1200):
    proc = subprocess.run([sys.executable, "-m", "twin.cli", "--home", str(home), *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "TWIN_HOME": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    (home / "twin.toml").write_text((ROOT / "examples" / "demo.toml").read_text())
    twin(home, "ingest", str(SAMPLE))
    # A step count, not a time budget, so the result does not depend on how busy the machine is (~3 min here).
    adapter = Path(twin(home, "train", "--max-steps", os.environ.get("TWIN_TEST_TRAIN_STEPS", "16"))
                   .strip().splitlines()[-1])
    return home, adapter


def test_training_halves_perplexity_and_the_classifier_struggles_more(trained):
    home, adapter = trained
    assert (adapter / "adapter_model.safetensors").exists()
    res = json.loads(twin(home, "eval", adapter.name, "--json"))
    print(json.dumps({k: res[k] for k in ("ratios", "held_out")}, indent=1))
    print({side: {k: res[side][k] for k in ("perplexity", "classifier_auc", "profile_distance", "distinct_2")}
           for side in ("base", "adapter")})
    assert res["adapter"]["perplexity"] <= 0.5 * res["base"]["perplexity"]
    assert res["adapter"]["classifier_auc"] < res["base"]["classifier_auc"]
    assert res["adapter"]["profile_distance"] < res["base"]["profile_distance"]


def test_draft_json_gives_three_distinct_candidates_without_a_server(trained):
    home, adapter = trained
    out = json.loads(twin(home, "draft", "--contact", "Tomas Berg", "--n", "3", "--json", "--backend", "auto",
                          "Are we still on for the crag on Saturday?"))
    texts = [c["text"] for c in out["candidates"]]
    assert len(texts) == 3 and len(set(texts)) == 3 and all(t.strip() for t in texts)
    assert all(c["messages"] and all(m.strip() for m in c["messages"]) for c in out["candidates"])
    assert out["adapter"] == adapter.name and out["latency_ms"] > 0
