"""The physical I/O floor of a merge: read every input byte once, write an output of the merged size.

    python bench/bench_floor.py bench/models/sd1_0.safetensors bench/models/sd1_1.safetensors
    python bench/bench_floor.py --cold --rounds 3 A B --out-size 2132625182
    python bench/bench_floor.py --strategies direct-threads,dd A B

No arithmetic: this is what the disk allows for the bytes a two-model merge must move, the lower
bound a merge tool can approach. Several strategies are timed (measured, not assumed; see
STRATEGIES), each writing a durable output (flushed with fsync, like `mecha run` and the baseline):

  buffered        one thread: read each input with 16 MiB `readinto`s, write 16 MiB `write`s, fsync
  buffered-wb     a thread per input and one writer, buffered, the writer kicking writeback with
                  `sync_file_range` every 64 MiB and dropping written pages (POSIX_FADV_DONTNEED)
  direct          one thread: O_DIRECT reads of 64 MiB blocks, then O_DIRECT writes of 64 MiB
  direct-threads  a thread per input reading O_DIRECT and a writer thread writing O_DIRECT, at once
  cached-direct   a thread per input reading buffered (from the page cache when the inputs are
                  warm) and a writer thread writing O_DIRECT, at once
  dd              `dd iflag=direct` per input and `dd oflag=direct` for the output, concurrently
  readahead       as cached-direct, with a thread per input asking the kernel to read the whole
                  file ahead (`posix_fadvise(WILLNEED)`, 8 MiB a call), as `mecha run` does while
                  torch is imported: the kernel's read-ahead keeps many requests in flight, which on
                  the reference machine's virtual disk moved the inputs faster than one 64 MiB
                  O_DIRECT read at a time did

The floor of a run is the fastest strategy of that run.

Cold cache: `sync; echo 3 > /proc/sys/vm/drop_caches` needs privileges that the benchmark machine
does not grant (even as root in its container the file is read-only). `drop_cache()` uses what is
permitted instead: `sync`, then `posix_fadvise(POSIX_FADV_DONTNEED)` on every input, which evicts
that file's clean pages from the page cache; `resident_fraction()` checks it with `mincore` (the
share of the file's pages still cached, printed with every cold run). Only the inputs are evicted,
which is what a cold merge means: nothing else of the system's cache is touched.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(HERE, "models")

CHUNK = 16 << 20  # buffered strategies
BLOCK = 64 << 20  # O_DIRECT strategies
ALIGN = 4096
_SYNC_FILE_RANGE_WRITE = 2
_SYNC_FILE_RANGE_WAIT_BEFORE = 1
_SYNC_FILE_RANGE_WAIT_AFTER = 4

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int64]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


# -- the page cache ---------------------------------------------------------------------------------

def drop_cache(paths: list[str]) -> list[float]:
    """Evict `paths` from the page cache (sync, then POSIX_FADV_DONTNEED); return the fraction of
    each file's pages still resident afterwards (0.0 when the eviction worked)."""
    os.sync()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return [resident_fraction(p) for p in paths]


def warm_cache(paths: list[str]) -> None:
    buf = bytearray(CHUNK)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def resident_fraction(path: str) -> float:
    """The fraction of `path`'s pages in the page cache, from mincore(2) on a mapping of it."""
    size = os.path.getsize(path)
    if size == 0:
        return 0.0
    page = mmap.PAGESIZE
    resident = 0
    total = 0
    window = 1 << 30  # map 1 GiB at a time: the mapping itself reads nothing
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in range(0, size, window):
            n = min(window, size - off)
            addr = _libc.mmap(None, n, mmap.PROT_READ, mmap.MAP_SHARED, fd, off)
            if addr in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), "mmap failed")
            try:
                pages = (n + page - 1) // page
                vec = (ctypes.c_ubyte * pages)()
                if _libc.mincore(addr, n, vec) != 0:
                    raise OSError(ctypes.get_errno(), "mincore failed")
                resident += pages - bytes(vec).count(0)  # low bit set: resident
                total += pages
            finally:
                _libc.munmap(addr, n)
    finally:
        os.close(fd)
    return resident / total


# -- strategies -------------------------------------------------------------------------------------

def _aligned(n: int) -> mmap.mmap:
    return mmap.mmap(-1, n)  # page-aligned anonymous memory


def _read_buffered(path: str) -> int:
    buf = bytearray(CHUNK)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while k := f.readinto(buf):
            total += k
    return total


def _read_direct(path: str) -> int:
    buf = _aligned(BLOCK)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    total = 0
    try:
        while k := os.preadv(fd, [buf], total):
            total += k
    finally:
        os.close(fd)
        buf.close()
    return total


def _write_buffered(path: str, size: int, writeback: bool) -> None:
    buf = bytes(CHUNK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        done = 0
        step = BLOCK if writeback else CHUNK
        big = bytes(step) if writeback else buf
        prev = []
        while done < size:
            n = min(step, size - done)
            os.pwrite(fd, memoryview(big)[:n], done)
            if writeback:
                # start writing this block now; wait for the one before last, then drop it
                _libc.sync_file_range(fd, done, n, _SYNC_FILE_RANGE_WRITE)
                prev.append((done, n))
                if len(prev) > 2:
                    o, m = prev.pop(0)
                    _libc.sync_file_range(fd, o, m, _SYNC_FILE_RANGE_WAIT_BEFORE
                                          | _SYNC_FILE_RANGE_WRITE | _SYNC_FILE_RANGE_WAIT_AFTER)
                    os.posix_fadvise(fd, o, m, os.POSIX_FADV_DONTNEED)
            done += n
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_direct(path: str, size: int) -> None:
    buf = _aligned(BLOCK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
    try:
        done = 0
        while done < size:
            n = min(BLOCK, size - done)
            n_al = -(-n // ALIGN) * ALIGN  # the last block is padded, then the file cut to size
            os.pwritev(fd, [memoryview(buf)[:n_al]], done)
            done += n
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
        buf.close()


def _threads(fns: list) -> None:
    errors: list[BaseException] = []

    def wrap(fn):
        try:
            fn()
        except BaseException as e:  # reported after the others finish
            errors.append(e)

    ts = [threading.Thread(target=wrap, args=(fn,)) for fn in fns]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def _advise(path: str) -> None:
    step = 8 << 20
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for off in range(0, size, step):
            os.posix_fadvise(fd, off, min(step, size - off), os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def s_buffered(inputs, out, size):
    for p in inputs:
        _read_buffered(p)
    _write_buffered(out, size, writeback=False)


def s_buffered_wb(inputs, out, size):
    _threads([lambda p=p: _read_buffered(p) for p in inputs]
             + [lambda: _write_buffered(out, size, writeback=True)])


def s_direct(inputs, out, size):
    for p in inputs:
        _read_direct(p)
    _write_direct(out, size)


def s_direct_threads(inputs, out, size):
    _threads([lambda p=p: _read_direct(p) for p in inputs] + [lambda: _write_direct(out, size)])


def s_cached_direct(inputs, out, size):
    _threads([lambda p=p: _read_buffered(p) for p in inputs] + [lambda: _write_direct(out, size)])


def s_readahead(inputs, out, size):
    _threads([lambda p=p: _advise(p) for p in inputs] + [lambda p=p: _read_buffered(p) for p in inputs]
             + [lambda: _write_direct(out, size)])


def s_dd(inputs, out, size):
    bs = 64 << 20
    count = -(-size // bs)
    procs = [subprocess.Popen(["dd", f"if={p}", "of=/dev/null", f"bs={bs}", "iflag=direct",
                               "status=none"]) for p in inputs]
    # dd cannot write an unaligned tail with oflag=direct: write whole blocks, then cut to size
    procs.append(subprocess.Popen(["dd", "if=/dev/zero", f"of={out}", f"bs={bs}",
                                   f"count={count}", "oflag=direct", "conv=fsync",
                                   "status=none"]))
    for p in procs:
        if p.wait() != 0:
            raise SystemExit(f"dd failed ({p.returncode})")
    os.truncate(out, size)


STRATEGIES = {
    "buffered": s_buffered,
    "buffered-wb": s_buffered_wb,
    "direct": s_direct,
    "direct-threads": s_direct_threads,
    "cached-direct": s_cached_direct,
    "dd": s_dd,
    "readahead": s_readahead,
}


def time_strategy(name: str, inputs: list[str], out: str, size: int, *, cold: bool) -> dict:
    """One timed run of strategy `name` (inputs evicted first when `cold`, else read beforehand);
    the output is removed afterwards."""
    resident = drop_cache(inputs) if cold else (warm_cache(inputs) or [])
    if os.path.exists(out):
        os.unlink(out)
    t = time.perf_counter()
    STRATEGIES[name](inputs, out, size)
    seconds = time.perf_counter() - t
    os.unlink(out)
    return {"strategy": name, "seconds": seconds, "resident_before": resident}


def floor_once(inputs: list[str], out: str, size: int, *, cold: bool,
               strategies: list[str]) -> dict:
    """Every strategy once; the floor is the fastest."""
    times = {}
    for name in strategies:
        times[name] = time_strategy(name, inputs, out, size, cold=cold)["seconds"]
    best = min(times, key=times.get)
    return {"seconds": times[best], "strategy": best, "all": times}


def merged_size(path: str) -> int:
    return os.path.getsize(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out-size", type=int, default=None,
                    help="bytes of the output (default: the size of the first input)")
    ap.add_argument("--out", default=os.path.join(MODELS, "floor_out.bin"))
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--cold", action="store_true", help="evict the inputs before every run")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    args = ap.parse_args(argv)
    names = args.strategies.split(",")
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise SystemExit(f"unknown strategy {unknown[0]} (known: {', '.join(STRATEGIES)})")
    size = args.out_size or merged_size(args.inputs[0])
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(args.out))).free
    if free < size + (2 << 30):
        raise SystemExit(f"not enough space for a {size / 1e9:.1f} GB output ({free / 1e9:.1f} GB free)")
    total_in = sum(os.path.getsize(p) for p in args.inputs)
    print(f"floor: read {total_in / 1e9:.2f} GB from {len(args.inputs)} files, write "
          f"{size / 1e9:.2f} GB, {'cold' if args.cold else 'warm'} cache", flush=True)
    results: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for n in names:
            res = time_strategy(n, args.inputs, args.out, size, cold=args.cold)
            results[n].append(res["seconds"])
            left = (" (still cached before the run: "
                    + ", ".join(f"{x:.1%}" for x in res["resident_before"]) + ")") \
                if args.cold else ""
            print(f"  round {r + 1} {n:15s} {res['seconds']:6.2f} s  "
                  f"{(total_in + size) / res['seconds'] / 1e6:6.0f} MB/s{left}", flush=True)
    med = {n: statistics.median(v) for n, v in results.items()}
    best = min(med, key=med.get)
    print("medians: " + ", ".join(f"{n} {s:.2f} s" for n, s in med.items())
          + f"; fastest: {best}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
