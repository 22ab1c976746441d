"""The worked examples in module docstrings (STYLE.md) are run, so they stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["bot.drafts", "twin.text", "twin.chat", "training.exports.whatsapp_lines", "training.exports.whatsapp_txt",
           "twin.outcomes", "twin.forget", "serving.fitting", "serving.oversampling", "twin.cli", "bot.forwards",
           "bot.origins", "twin.replies", "training.reply_model", "twin.report"]


@pytest.mark.parametrize("name", MODULES)
def test_worked_examples_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
