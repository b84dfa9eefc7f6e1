"""Direct I/O in the runtime: the read-ahead (prefetch.py), the block writer (blocks.py), and their
fallbacks to buffered I/O where O_DIRECT is refused. Outputs must be byte-identical whichever path
wrote them, in whatever order tensors finish."""

from __future__ import annotations

import errno
import json
import os
import random
import struct
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from mechalang.runtime import blocks as blocks_module
from mechalang.runtime import direct, early
from mechalang.runtime import prefetch as prefetch_module
from mechalang.runtime import writer as writer_module
from mechalang.runtime.blocks import BlockWriter
from mechalang.runtime.errors import RuntimeFailure
from mechalang.runtime.executor import execute
from mechalang.runtime.plan import InputFile, Read
from mechalang.runtime.prefetch import Prefetcher
from mechalang.runtime.reader import InputReader, view_as

from .test_runtime_helpers import add, models, output, plan, save, scale, temp_leftovers

DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
          "F64": (torch.float64, 8), "I64": (torch.int64, 8), "U8": (torch.uint8, 1),
          "I16": (torch.int16, 2), "BOOL": (torch.bool, 1)}


def write_unaligned(path: Path, tensors: list[tuple[str, str, tuple[int, ...]]],
                    seed: int) -> dict[str, torch.Tensor]:
    """A safetensors file with the tensors packed in the order given, so that offsets are not
    multiples of the element sizes (the format allows it; safetensors' own writer sorts by dtype)."""
    g = torch.Generator().manual_seed(seed)
    header, blobs, pos, values = {}, [], 0, {}
    for key, dt, shape in tensors:
        tdt, size = DTYPES[dt]
        n = 1
        for d in shape:
            n *= d
        raw = torch.randint(0, 256, (n * size,), dtype=torch.uint8, generator=g)
        if dt == "BOOL":
            raw = raw % 2
        values[key] = raw.view(tdt).reshape(shape) if n else torch.empty(shape, dtype=tdt)
        header[key] = {"dtype": dt, "shape": list(shape), "data_offsets": [pos, pos + n * size]}
        blobs.append(raw.numpy().tobytes())
        pos += n * size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return values


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (random bytes make NaNs, which torch.equal finds unequal)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def reads_of(path: Path, source: int = 0) -> tuple[InputFile, list[Read]]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    inp = InputFile(str(path), 8 + n, len(raw), path.name)
    reads = [Read(source, k, v["dtype"], tuple(v["shape"]), *v["data_offsets"])
             for k, v in header.items()]
    return inp, reads


layouts = st.lists(
    st.tuples(st.sampled_from(sorted(DTYPES)),
              st.lists(st.integers(0, 70), min_size=0, max_size=3).map(tuple)),
    min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=layouts, chunk_pages=st.integers(1, 3), window_chunks=st.integers(1, 4),
       seed=st.integers(0, 2**16), sliced=st.booleans())
def test_read_ahead_equals_safetensors_loader(tmp_path, layout, chunk_pages, window_chunks, seed,
                                              sliced):
    """Random layouts (unaligned offsets, empty tensors, chunk boundaries inside tensors) read
    through the read-ahead, whole or in slices, equal safetensors' own loader."""
    path = tmp_path / f"m{seed}.safetensors"
    tensors = [(f"t{i}", dt, shape) for i, (dt, shape) in enumerate(layout)]
    write_unaligned(path, tensors, seed)
    expected = load_file(str(path))
    inp, reads = reads_of(path)
    rng = random.Random(seed)
    order = []  # (read, lo, hi) in the order they will be asked for
    for r in reads:
        n = r.end - r.begin
        size = DTYPES[r.dtype][1]
        if sliced and n > 2 * size:
            cut = rng.randrange(1, n // size) * size
            order += [(r, 0, cut), (r, cut, n)]
        else:
            order.append((r, 0, n))
    chunk = chunk_pages * direct.ALIGN
    with InputReader((inp,)) as reader:
        reader.prefetcher = Prefetcher(
            [str(path)], [(0, inp.data_start + r.begin + lo, hi - lo) for r, lo, hi in order],
            chunk=chunk, window=window_chunks * chunk)
        got: dict[str, list[torch.Tensor]] = {}
        for r, lo, hi in order:
            got.setdefault(r.key, []).append(reader.read_raw(r, lo, hi).clone())
        assert reader.bytes_read == sum(hi - lo for _, lo, hi in order)
    for r in reads:
        value = view_as(torch.cat(got[r.key]) if got[r.key] else torch.empty(0, dtype=torch.uint8),
                        r.dtype, r.shape)
        assert same_bytes(value, expected[r.key]), r.key


def test_read_ahead_out_of_order_does_not_wait_forever(tmp_path):
    """Asking for the last range first, with a window of one chunk, reads it directly instead of
    waiting for a chunk the full window keeps from being read."""
    path = tmp_path / "m.safetensors"
    values = write_unaligned(path, [(f"t{i}", "F32", (3000,)) for i in range(8)], 1)
    inp, reads = reads_of(path)
    with InputReader((inp,)) as reader:
        pf = reader.prefetcher = Prefetcher(
            [str(path)], [(0, inp.data_start + r.begin, r.end - r.begin) for r in reads],
            chunk=4 * direct.ALIGN, window=4 * direct.ALIGN)
        for r in reversed(reads):
            assert same_bytes(reader.read(r), values[r.key])
        assert pf.missed > 0  # read directly: the window was full of chunks read in order
        pf.close()


def refuse_direct(monkeypatch, where: str) -> list[int]:
    """Make O_DIRECT fail with EINVAL, as tmpfs and some network filesystems do: at `open` or at
    the first read or write. Returns the descriptors that were opened with O_DIRECT."""
    real_open, real_preadv, real_pwrite, real_close = os.open, os.preadv, os.pwrite, os.close
    direct_fds: list[int] = []  # ever opened with O_DIRECT
    open_direct: set[int] = set()  # still open (descriptor numbers are reused)

    def fake_open(path, flags, *args, **kw):
        if flags & direct.O_DIRECT:
            if where == "open":
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            fd = real_open(path, flags, *args, **kw)
            direct_fds.append(fd)
            open_direct.add(fd)
            return fd
        return real_open(path, flags, *args, **kw)

    def fake_close(fd):
        open_direct.discard(fd)
        return real_close(fd)

    def fake_preadv(fd, bufs, offset):
        if fd in open_direct:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real_preadv(fd, bufs, offset)

    def fake_pwrite(fd, data, offset):
        if fd in open_direct:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "preadv", fake_preadv)
    monkeypatch.setattr(os, "pwrite", fake_pwrite)
    monkeypatch.setattr(os, "close", fake_close)
    return direct_fds


@pytest.fixture
def trio(tmp_path):
    """Three inputs with keys large enough to be sliced and small ones between them."""
    g = torch.Generator().manual_seed(3)
    paths = []
    for j in range(3):
        sd = {}
        for i in range(5):
            sd[f"big{i}"] = torch.randn(70_000 + 1000 * i, generator=g).to(torch.float16)
            sd[f"small{i}"] = torch.randn(33 + i, generator=g)
        sd["ids"] = torch.arange(77, dtype=torch.int64)
        paths.append(save(tmp_path / f"in{j}.safetensors", sd))
    return models(*paths)


def trio_plan(ms, out):
    a, b, c = ms
    entries = []
    for k in a.keys():
        if k == "ids":
            entries.append((k, a.read(k), a.dtype(k), a.shape(k)))
        else:
            e = add(scale(a.read(k), 0.5), scale(add(b.read(k), scale(c.read(k), -1.0)), 0.5))
            entries.append((k, e, "F16" if k.startswith("big") else "F32", a.shape(k)))
    return plan(ms, output(out, entries))


@pytest.fixture
def small_blocks(monkeypatch):
    """Direct writes for small outputs too, in blocks of 8 KiB with at most 3 open."""
    monkeypatch.setattr(writer_module, "DIRECT_MIN", 0)
    monkeypatch.setattr(blocks_module, "BLOCK", 8192)
    monkeypatch.setattr(blocks_module, "MAX_OPEN", 3)
    monkeypatch.setattr(prefetch_module, "CHUNK", 16384)
    monkeypatch.setattr(prefetch_module, "WINDOW", 65536)
    monkeypatch.setattr("mechalang.runtime.executor.SLICE_ELEMS", 4096)


def run_plain(ms, out, monkeypatch, **kw):
    with monkeypatch.context() as m:
        m.setenv("MECHA_DIRECT_IO", "0")
        m.setenv("MECHA_PREFETCH", "0")
        execute(trio_plan(ms, out), **kw)
    return out.read_bytes()


def io_counts(monkeypatch) -> dict[str, int]:
    """Count the bytes the block writers wrote direct and the reads the read-ahead made direct."""
    counts = {"direct_written": 0, "buffered_written": 0, "direct_reads": 0, "cached_reads": 0}
    finish, close = BlockWriter.finish, Prefetcher.close

    def counting_finish(self):
        finish(self)
        counts["direct_written"] += self.direct_bytes
        counts["buffered_written"] += self.buffered_bytes

    def counting_close(self):
        close(self)
        counts["direct_reads"] += self.direct_reads
        counts["cached_reads"] += self.buffered_reads

    monkeypatch.setattr(BlockWriter, "finish", counting_finish)
    monkeypatch.setattr(Prefetcher, "close", counting_close)
    return counts


def evict(ms) -> None:
    """Drop the inputs from the page cache: cached bytes are read through it, the rest direct."""
    os.sync()
    for m in ms:
        fd = os.open(m.path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_direct_outputs_are_byte_identical(tmp_path, trio, small_blocks, monkeypatch, threads):
    plain = run_plain(trio, tmp_path / "plain.safetensors", monkeypatch, threads=1)
    counts = io_counts(monkeypatch)
    evict(trio)
    out = tmp_path / f"direct{threads}.safetensors"
    execute(trio_plan(trio, out), threads=threads)
    assert out.read_bytes() == plain
    assert temp_leftovers(tmp_path) == []
    assert counts["direct_written"] > 0 and counts["direct_reads"] > 0


def test_cached_inputs_are_read_through_the_page_cache(tmp_path, trio, small_blocks, monkeypatch):
    """A warm input is copied from the page cache (a direct read would go to the disk again);
    ranges asked for before torch's import (early.py) likewise."""
    plain = run_plain(trio, tmp_path / "plain.safetensors", monkeypatch, threads=2)
    counts = io_counts(monkeypatch)
    for m in trio:
        Path(m.path).read_bytes()
    execute(trio_plan(trio, tmp_path / "warm.safetensors"), threads=2)
    assert (tmp_path / "warm.safetensors").read_bytes() == plain
    assert counts["cached_reads"] > 0 and counts["direct_reads"] == 0

    evict(trio)
    p = trio_plan(trio, tmp_path / "early.safetensors")
    ranges = early.first_ranges(p, budget=1 << 40)
    ids = trio[0].read("ids")
    for s, m in enumerate(trio):  # every input: the bytes it gives, contiguous (`ids` from a only)
        start = p.inputs[s].data_start + (0 if s == 0 else ids.end - ids.begin)
        assert ranges[s] == [(direct.align_down(start), os.path.getsize(m.path))]
    reads = early.start(p)
    reads.join()
    execute(p, threads=2, early=reads)
    assert (tmp_path / "early.safetensors").read_bytes() == plain
    assert counts["direct_reads"] == 0


@pytest.mark.parametrize("where", ["open", "first read or write"])
def test_refused_direct_io_falls_back(tmp_path, trio, small_blocks, monkeypatch, where):
    plain = run_plain(trio, tmp_path / "plain.safetensors", monkeypatch, threads=2)
    direct_fds = refuse_direct(monkeypatch, where)
    counts = io_counts(monkeypatch)
    evict(trio)
    out = tmp_path / "out.safetensors"
    execute(trio_plan(trio, out), threads=2)
    assert out.read_bytes() == plain
    assert (direct_fds == []) == (where == "open")
    assert counts["direct_written"] == 0 and counts["direct_reads"] == 0
    # refused at open: the ordinary writer; refused at the first write: blocks written buffered
    assert (counts["buffered_written"] > 0) == (where != "open")
    assert temp_leftovers(tmp_path) == []


def test_dev_shm_direct_io_or_fallback(trio, small_blocks, monkeypatch, tmp_path):
    """On a tmpfs (which refuses O_DIRECT on older kernels and accepts it on newer ones) the run
    gives the same bytes either way."""
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm")
    plain = run_plain(trio, tmp_path / "plain.safetensors", monkeypatch, threads=2)
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        out = Path(shm) / "out.safetensors"
        execute(trio_plan(trio, out), threads=2)
        assert out.read_bytes() == plain


def test_disk_full_during_a_direct_block_write(tmp_path, trio, small_blocks, monkeypatch):
    real_pwrite = os.pwrite
    calls = []

    def pwrite(fd, data, offset):
        calls.append(offset)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    out = tmp_path / "out.safetensors"
    with pytest.raises(RuntimeFailure) as e:
        execute(trio_plan(trio, out), threads=2)
    assert e.value.message.startswith(f"disk full while writing {out} (tensor '")
    assert not out.exists() and temp_leftovers(tmp_path) == []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 30_000), min_size=1, max_size=20), seed=st.integers(0, 2**16),
       max_open=st.integers(1, 4), header=st.integers(8, 5000), use_direct=st.booleans())
def test_block_assembly_any_completion_order(tmp_path, sizes, seed, max_open, header, use_direct):
    """Pieces written in random order from several threads give the same file as writing them in
    order, whether blocks are written whole (direct or not) or spilled to buffered writes."""
    rng = random.Random(seed)
    data = bytes(rng.getrandbits(8) for _ in range(header + sum(sizes)))
    spans, pos = [(0, header, None)], header
    for i, n in enumerate(sizes):
        spans.append((pos, pos + n, f"t{i}"))
        pos += n
    total = pos
    path = tmp_path / f"out{seed}.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(fd, total)
    dfd = os.open(path, os.O_WRONLY | (direct.O_DIRECT if use_direct else 0))
    pieces = []
    for start, end, _ in spans:  # each span in one to three pieces
        cuts = sorted({start, end, *(rng.randrange(start, end + 1) for _ in range(2))})
        pieces += [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
    rng.shuffle(pieces)
    bw = BlockWriter(dfd, fd, total, spans, lambda e, key: RuntimeFailure(f"{e} {key}"),
                     block=8192, max_open=max_open)
    lanes = [pieces[i::3] for i in range(3)]
    errors = []

    def lane(ps):
        try:
            for a, b in ps:
                bw.put(a, memoryview(bytearray(data[a:b])))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=lane, args=(ps,)) for ps in lanes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if not errors:
            bw.finish()
    except RuntimeFailure as e:
        errors.append(e)
    finally:
        bw.close()
        os.close(fd)
        os.close(dfd)
    assert not errors
    assert path.read_bytes() == data
