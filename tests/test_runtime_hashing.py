"""sha256 of model files with the on-disk cache, and the A1111 short hash."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from mechalang.runtime import hashing
from mechalang.runtime.hashing import a1111_short_hash, cache_path, cached_sha256, sha256_file


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    home = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def test_hash_matches_hashlib_and_is_cached(tmp_path, cache_home, monkeypatch):
    monkeypatch.setattr(hashing, "CHUNK", 1000)  # several chunks
    f = tmp_path / "m.safetensors"
    data = os.urandom(12345)
    f.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()

    read = []
    assert sha256_file(f, progress=read.append) == expected
    assert sum(read) == len(data) and len(read) == 13  # a miss reads the whole file
    assert cache_path() == cache_home / "mechalang" / "hashes.json"
    entry = json.loads(cache_path().read_text())["files"][os.path.realpath(f)]
    assert entry == {"size": len(data), "mtime_ns": os.stat(f).st_mtime_ns, "sha256": expected}

    read.clear()
    assert sha256_file(f, progress=read.append) == expected
    assert read == []  # a hit reads nothing
    # through a symlink: the same real path, the same entry
    link = tmp_path / "link.safetensors"
    link.symlink_to(f)
    assert sha256_file(link, progress=read.append) == expected and read == []


def test_changed_file_is_a_miss(tmp_path, cache_home):
    f = tmp_path / "m.bin"
    f.write_bytes(b"one")
    assert sha256_file(f) == hashlib.sha256(b"one").hexdigest()
    f.write_bytes(b"two, longer")
    assert cached_sha256(f) is None
    assert sha256_file(f) == hashlib.sha256(b"two, longer").hexdigest()
    # same size, different content and mtime
    f.write_bytes(b"three, long")
    os.utime(f, ns=(1, 1))
    assert sha256_file(f) == hashlib.sha256(b"three, long").hexdigest()
    # a stale entry with the right size and mtime is trusted: that is the cache's contract
    data = json.loads(cache_path().read_text())
    data["files"][os.path.realpath(f)]["sha256"] = "0" * 64
    cache_path().write_text(json.dumps(data))
    assert sha256_file(f) == "0" * 64
    assert sha256_file(f, use_cache=False) == hashlib.sha256(b"three, long").hexdigest()


def test_corrupt_or_unwritable_cache_is_ignored(tmp_path, cache_home, monkeypatch):
    f = tmp_path / "m.bin"
    f.write_bytes(b"abc")
    cache_path().parent.mkdir(parents=True)
    cache_path().write_text("{not json")
    assert sha256_file(f) == hashlib.sha256(b"abc").hexdigest()
    assert cached_sha256(f) == hashlib.sha256(b"abc").hexdigest()  # rewritten cleanly
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert sha256_file(f) == hashlib.sha256(b"abc").hexdigest()


def test_a1111_short_hash():
    sha = hashlib.sha256(b"model").hexdigest()
    assert a1111_short_hash(sha) == sha[:10]
    assert a1111_short_hash(sha.upper()) == sha[:10]


def test_hashing_and_errors_are_torch_free():
    code = ("import sys, mechalang.runtime.hashing, mechalang.runtime.errors; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
