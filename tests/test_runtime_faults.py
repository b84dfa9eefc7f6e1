"""Failures during a run: a clear RuntimeFailure (or the interrupt itself), no output file, no
temporary file left behind, inputs untouched."""

import errno
import os
import threading

import pytest
import torch
from safetensors.torch import load_file

from mechalang.diagnostics import Span
from mechalang.methods.registry import Same
from mechalang.runtime import writer as writer_module
from mechalang.runtime.errors import RuntimeFailure
from mechalang.runtime.executor import execute
from mechalang.runtime.plan import Op
from mechalang.units import format_bytes

from .test_runtime_helpers import add, models, output, plan, registry_with, save, scale, temp_leftovers


@pytest.fixture
def pair(tmp_path):
    g = torch.Generator().manual_seed(1)
    a = {f"k{i}": torch.randn(32, 16, generator=g) for i in range(6)}
    b = {f"k{i}": torch.randn(32, 16, generator=g) for i in range(6)}
    pa, pb = save(tmp_path / "a.safetensors", a), save(tmp_path / "b.safetensors", b)
    return a, b, models(pa, pb)


def avg_plan(ms, out, method=None):
    ma, mb = ms
    entries = []
    for k in ma.keys():
        if method:
            expr = Op(method, (ma.read(k), mb.read(k)), (), Span("r.mecha", 2, 1, 2, 9))
        else:
            expr = add(scale(ma.read(k), 0.5), scale(mb.read(k), 0.5))
        entries.append((k, expr, "F32", ma.shape(k)))
    return plan(ms, output(out, entries))


def snapshot(ms):
    return {m.path: (os.path.getsize(m.path), open(m.path, "rb").read()) for m in ms}


def assert_clean(tmp_path, out, ms=None, before=None):
    assert not os.path.exists(out)
    assert temp_leftovers(tmp_path) == []
    if ms is not None:
        assert snapshot(ms) == before


def test_input_truncated_after_planning(tmp_path, pair):
    a, b, ms = pair
    out = tmp_path / "out.safetensors"
    p = avg_plan(ms, out)
    with open(ms[1].path, "r+b") as f:
        f.truncate(os.path.getsize(ms[1].path) - 100)
    with pytest.raises(RuntimeFailure) as e:
        execute(p, threads=2)
    assert ms[1].path in e.value.message and "changed since the recipe was checked" in e.value.message
    assert_clean(tmp_path, out)


def test_input_truncated_during_the_run(tmp_path, pair):
    a, b, ms = pair
    out = tmp_path / "out.safetensors"
    victim = ms[1].path

    def truncating(x: Same, y: Same) -> Same:
        with open(victim, "r+b") as f:  # the first key's inputs are read already
            f.truncate(1000)
        return x + y

    reg = registry_with(truncating)
    with pytest.raises(RuntimeFailure) as e:
        execute(avg_plan(ms, out, "truncating"), threads=1, registry=reg)
    msg = e.value.message
    assert victim in msg and "'k1'" in msg and "shorter than when the recipe was checked" in msg
    assert e.value.key == "k1"
    assert_clean(tmp_path, out)


def test_full_disk_detected_before_any_work(tmp_path, pair, monkeypatch):
    a, b, ms = pair
    before = snapshot(ms)
    out = tmp_path / "out.safetensors"
    calls = []

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def counted(x: Same, y: Same) -> Same:
        calls.append(1)
        return x + y

    monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    monkeypatch.setattr(writer_module, "free_space", lambda folder: 1_300_000_000)
    p = avg_plan(ms, out, "counted")
    with pytest.raises(RuntimeFailure) as e:
        execute(p, registry=registry_with(counted))
    size = len(p.outputs[0].header_bytes()) + p.outputs[0].data_bytes
    assert e.value.message == (f"not enough disk space for {out}: needs {format_bytes(size)}, "
                               f"1.3 GB free")
    assert calls == []
    assert_clean(tmp_path, out, ms, before)


def test_disk_full_while_writing(tmp_path, pair, monkeypatch):
    a, b, ms = pair
    before = snapshot(ms)
    out = tmp_path / "out.safetensors"
    real_pwrite = os.pwrite
    writes = []

    def pwrite(fd, data, offset):
        writes.append(offset)
        if len(writes) > 2:  # the header and one tensor fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(RuntimeFailure) as e:
        execute(avg_plan(ms, out), threads=2)
    assert e.value.message.startswith(f"disk full while writing {out} (tensor 'k")
    assert_clean(tmp_path, out, ms, before)


def test_io_error_while_writing(tmp_path, pair, monkeypatch):
    a, b, ms = pair
    out = tmp_path / "out.safetensors"

    def pwrite(fd, data, offset):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(RuntimeFailure, match=f"I/O error while writing {out}"):
        execute(avg_plan(ms, out), threads=1)
    assert_clean(tmp_path, out)


def test_fsync_failure(tmp_path, pair, monkeypatch):
    a, b, ms = pair
    out = tmp_path / "out.safetensors"

    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(RuntimeFailure, match=f"I/O error while writing {out}"):
        execute(avg_plan(ms, out), threads=1)
    assert_clean(tmp_path, out)


@pytest.mark.parametrize("threads", [1, 3])
def test_keyboard_interrupt_inside_an_op(tmp_path, pair, threads):
    a, b, ms = pair
    before = snapshot(ms)
    out = tmp_path / "out.safetensors"
    second = tmp_path / "second.safetensors"
    count = []
    lock = threading.Lock()

    def interrupting(x: Same, y: Same) -> Same:
        with lock:
            count.append(1)
            if len(count) == 3:
                raise KeyboardInterrupt
        return x + y

    reg = registry_with(interrupting)
    p = avg_plan(ms, out, "interrupting")
    p2 = plan(ms, p.outputs[0], output(second, [("k0", ms[0].read("k0"), "F32", (32, 16))]))
    with pytest.raises(KeyboardInterrupt):
        execute(p2, threads=threads, registry=reg)
    assert not second.exists()
    assert_clean(tmp_path, out, ms, before)


def test_nan_output_with_check_finite(tmp_path, pair):
    a, b, ms = pair
    nan_in = dict(a)
    nan_in["k2"] = a["k2"].clone()
    nan_in["k2"][3, 4] = float("nan")
    nan_in["k4"] = a["k4"].clone()
    nan_in["k4"][0, 0] = float("inf")
    ms = models(save(tmp_path / "n.safetensors", nan_in), ms[1].path)
    out = tmp_path / "out.safetensors"
    with pytest.raises(RuntimeFailure) as e:
        execute(avg_plan(ms, out), threads=2, check_finite=True)
    assert e.value.message == "non-finite values (NaN or inf) in 2 output tensors: 'k2', 'k4'"
    assert e.value.key == "k2"
    assert_clean(tmp_path, out)
    # without the check, the file is written as computed
    execute(avg_plan(ms, out), threads=2)
    assert torch.isnan(load_file(str(out))["k2"][3, 4])


def test_overflow_to_inf_in_fp16_is_caught(tmp_path):
    x = {"k": torch.tensor([1.0, 70000.0])}
    ms = models(save(tmp_path / "x.safetensors", x))
    out = tmp_path / "out.safetensors"
    with pytest.raises(RuntimeFailure, match="'k'"):
        execute(plan(ms, output(out, [("k", scale(ms[0].read("k"), 1.0), "F16", (2,))])),
                check_finite=True)
    assert_clean(tmp_path, out)


def test_output_equal_to_input_is_refused(tmp_path, pair):
    a, b, ms = pair
    before = snapshot(ms)
    for target in (ms[0].path, str(tmp_path / "link.safetensors")):
        if target.endswith("link.safetensors"):
            os.symlink(ms[1].path, target)
        with pytest.raises(RuntimeFailure, match="refusing to overwrite a model that the merge reads"):
            execute(avg_plan(ms, target))
    assert snapshot(ms) == before
    assert temp_leftovers(tmp_path) == []


def test_missing_output_folder(tmp_path, pair):
    a, b, ms = pair
    out = tmp_path / "nowhere" / "out.safetensors"
    with pytest.raises(RuntimeFailure, match="the folder .*nowhere does not exist"):
        execute(avg_plan(ms, out))


def test_unwritable_output_folder(tmp_path, pair, monkeypatch):
    a, b, ms = pair
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / "out.safetensors"
    if os.geteuid() == 0:  # root writes anywhere: simulate the refusal instead
        real_open = os.open

        def deny(path, flags, mode=0o777, *args, **kw):
            if ".mecha-tmp-" in str(path):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
            return real_open(path, flags, mode, *args, **kw)

        monkeypatch.setattr(os, "open", deny)
    else:
        folder.chmod(0o555)
    try:
        with pytest.raises(RuntimeFailure) as e:
            execute(avg_plan(ms, out))
    finally:
        folder.chmod(0o755)
    assert e.value.message == f"cannot write {out}: no permission to create files in {folder}"
    assert_clean(folder, out)


def test_second_output_failing_removes_the_first(tmp_path, pair, monkeypatch):
    a, b, ms = pair
    out1, out2 = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    real = os.posix_fallocate
    calls = []

    def second_fails(fd, offset, length):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", second_fails)
    p = avg_plan(ms, out1)
    p2 = plan(ms, p.outputs[0], output(out2, [("k0", ms[0].read("k0"), "F32", (32, 16))]))
    with pytest.raises(RuntimeFailure, match=f"not enough disk space for {out2}"):
        execute(p2)
    assert not out1.exists() and not out2.exists() and temp_leftovers(tmp_path) == []


def test_existing_output_is_replaced_only_when_complete(tmp_path, pair):
    a, b, ms = pair
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"old contents")

    def broken(x: Same, y: Same) -> Same:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeFailure):
        execute(avg_plan(ms, out, "broken"), registry=registry_with(broken))
    assert out.read_bytes() == b"old contents"
    execute(avg_plan(ms, out))
    assert torch.equal(load_file(str(out))["k0"], a["k0"] * 0.5 + b["k0"] * 0.5)
