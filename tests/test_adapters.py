"""Adapter names are versioned and never reused; publishing is all or nothing."""

import pytest

from twin.adapters import find_adapter, list_adapters, next_name, publish
from twin.errors import NotFound


def make(adapters, name):
    d = adapters / name
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text("{}")
    return d


def test_names_count_up_and_are_never_reused(tmp_path):
    adapters = tmp_path / "adapters"
    assert next_name(adapters, "twin") == "twin-v1"
    make(adapters, "twin-v1")
    assert next_name(adapters, "twin") == "twin-v2"
    # v2 was reserved but never published, and v1 is deleted: the next is still v3.
    (adapters / "twin-v1" / "adapter_config.json").unlink()
    (adapters / "twin-v1").rmdir()
    assert next_name(adapters, "twin") == "twin-v3"
    assert next_name(adapters, "mira") == "mira-v1"


def test_bad_base_name(tmp_path):
    with pytest.raises(NotFound, match="--name"):
        next_name(tmp_path, "my twin/../x")


def test_publish_and_find(tmp_path):
    adapters = tmp_path / "adapters"
    staging = make(tmp_path, ".staging")
    adapters.mkdir()
    publish(staging, adapters / "twin-v1")
    assert not staging.exists()
    make(adapters, "twin-v2")
    assert [a.name for a in list_adapters(adapters)] == ["twin-v1", "twin-v2"]
    assert find_adapter(adapters, "twin-v1").path == adapters / "twin-v1"
    with pytest.raises(NotFound, match="have: twin-v1, twin-v2"):
        find_adapter(adapters, "twin-v9")
    with pytest.raises(FileExistsError):
        publish(make(tmp_path, ".staging2"), adapters / "twin-v2")
