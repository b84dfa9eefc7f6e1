"""The models-folder catalog the forms list (commands/catalog.py): what it reads, and its cache."""

from __future__ import annotations

import json
import os

import pytest

from mechalang.commands import catalog
from mechalang.synth import make_model


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHA_CACHE_DIR", str(tmp_path / "cache"))
    d = tmp_path / "models"
    d.mkdir()
    make_model("sd1", d / "a.safetensors", seed=1)
    make_model("sdxl", d / "b.safetensors", seed=2)
    (d / "broken.safetensors").write_bytes(b"\x00" * 4)
    return d


def test_scan_lists_arch_size_hash_and_problems(folder):
    entries = {e.name: e for e in catalog.scan(folder)}
    assert [e for e in entries] == ["a.safetensors", "b.safetensors", "broken.safetensors"]
    assert (entries["a.safetensors"].arch, entries["b.safetensors"].arch) == ("sd1", "sdxl")
    assert entries["a.safetensors"].size == (folder / "a.safetensors").stat().st_size
    assert entries["a.safetensors"].short_hash == catalog.header_hash(folder / "a.safetensors")
    assert entries["broken.safetensors"].arch == "?" and entries["broken.safetensors"].problem


def test_a_second_scan_reads_no_header(folder, monkeypatch):
    first = catalog.scan(folder)

    def no_reading(*a, **k):
        raise AssertionError("a cached file's header was read again")

    monkeypatch.setattr(catalog, "_entry", no_reading)
    assert catalog.scan(folder) == first


def test_a_changed_file_is_read_again(folder):
    catalog.scan(folder)
    make_model("sdxl", folder / "a.safetensors", seed=3)  # same name, another model
    st = (folder / "a.safetensors").stat()
    os.utime(folder / "a.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    entries = {e.name: e for e in catalog.scan(folder)}
    assert entries["a.safetensors"].arch == "sdxl"
    assert entries["a.safetensors"].short_hash == catalog.header_hash(folder / "a.safetensors")


@pytest.mark.parametrize("content", ["{not json", '{"key": 3}', '{"key": "x", "files": []}', ""])
def test_a_broken_or_stale_cache_is_ignored_and_replaced(folder, tmp_path, content):
    cache = tmp_path / "cache" / "catalog.json"
    cache.parent.mkdir()
    cache.write_text(content)
    assert [e.arch for e in catalog.scan(folder)] == ["sd1", "sdxl", "?"]
    assert len(json.loads(cache.read_text())["files"]) == 3


def test_an_unwritable_cache_folder_only_costs_time(folder, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("MECHA_CACHE_DIR", str(blocker / "cache"))
    assert [e.arch for e in catalog.scan(folder)] == ["sd1", "sdxl", "?"]


def test_a_new_user_architecture_invalidates_the_cache(folder, tmp_path, monkeypatch):
    catalog.scan(folder)
    user = tmp_path / "archs"
    user.mkdir()
    (user / "mine.toml").write_text("# a user's architecture file\n")
    monkeypatch.setenv("MECHA_PATH", str(user))
    calls = []
    real = catalog._entry
    monkeypatch.setattr(catalog, "_entry", lambda *a: calls.append(a) or real(*a))
    catalog.scan(folder)
    assert len(calls) == 3
