"""Reading single tensors out of safetensors files.

During a run, reads are served from the executor's read-ahead (`prefetch.py`: large aligned
direct reads ahead of the computation, each tensor a zero-copy view into them); a range the
read-ahead does not hold is read here with one `pread` into a fresh buffer.

Files are never memory-mapped: mapped pages count in the process's resident set, and the backend
promises a peak memory bounded by the work in flight. Each read fills a fresh torch-owned buffer
(pinned when the computation runs on a GPU, so the copy to the device is asynchronous), which is
then viewed with the tensor's dtype and shape. Safetensors data is little-endian, like every host
torch runs on in practice; a big-endian host is refused rather than read wrongly.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

import torch

from ..dtypes import DTYPES
from ..runtime.plan import InputFile, Read
from .errors import RuntimeFailure

# safetensors dtype name -> torch dtype: the supported dtypes of the one table that this torch has
TORCH_DTYPES: dict[str, torch.dtype] = {
    d.name: getattr(torch, d.torch_name) for d in DTYPES.values()
    if d.supported and hasattr(torch, d.torch_name)
}

TORCH_ELEMENT_SIZE: dict[str, int] = {
    name: torch.empty((), dtype=t).element_size() for name, t in TORCH_DTYPES.items()}

# Linux caps one read/write call at 0x7ffff000 bytes; stay well below
_MAX_IO = 1 << 30


def torch_dtype(name: str) -> torch.dtype:
    try:
        return TORCH_DTYPES[name]
    except KeyError:
        raise RuntimeFailure(f"dtype {name} is not supported by this version of torch") from None


def byte_view(t: torch.Tensor) -> memoryview:
    """A writable, zero-copy byte view of a contiguous CPU tensor's storage.

    The view does not keep the tensor alive: the caller holds `t` while the view is in use.
    """
    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(b"")
    arr = (ctypes.c_char * n).from_address(t.data_ptr())
    return memoryview(arr).cast("B")


def empty_bytes(n: int, *, pin: bool = False) -> torch.Tensor:
    """A fresh uninitialised uint8 CPU tensor of `n` bytes (page-locked if `pin`)."""
    return torch.empty(n, dtype=torch.uint8, pin_memory=pin)


def view_as(raw: torch.Tensor, dtype: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The uint8 buffer `raw` seen as a tensor of safetensors dtype `dtype` and `shape`."""
    tdt = torch_dtype(dtype)
    if raw.numel() == 0:
        return torch.empty(shape, dtype=tdt, device=raw.device)
    return raw.view(tdt).reshape(shape)


class InputReader:
    """Open input files (read-only) and read one tensor at a time. Safe to use from many threads.

    Sizes are checked when opening against the size recorded at planning time; a file that shrinks
    during the run is caught by the short read.
    """

    def __init__(self, inputs: tuple[InputFile, ...], *, pin_memory: bool = False):
        if sys.byteorder != "little":
            raise RuntimeFailure("this machine is big-endian; safetensors files are little-endian "
                                 "and cannot be read here")
        self.inputs = inputs
        self.pin_memory = pin_memory
        self._fds: list[int | None] = [None] * len(inputs)
        self._lock = threading.Lock()
        self.bytes_read = 0
        self.prefetcher = None  # a prefetch.Prefetcher, set by the executor for a run

    def open(self) -> "InputReader":
        for i, inp in enumerate(self.inputs):
            try:
                fd = os.open(inp.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                raise RuntimeFailure(f"input {inp.path} no longer exists", path=inp.path) from None
            except OSError as e:
                raise RuntimeFailure(f"cannot open input {inp.path}: {e.strerror}",
                                     path=inp.path) from None
            self._fds[i] = fd
            size = os.fstat(fd).st_size
            if size != inp.size:
                raise RuntimeFailure(
                    f"input {inp.path} changed since the recipe was checked: it was {inp.size} "
                    f"bytes, it is now {size} bytes", path=inp.path)
        return self

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()
            self.prefetcher = None
        for i, fd in enumerate(self._fds):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
                self._fds[i] = None

    def __enter__(self) -> "InputReader":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def read_raw(self, r: Read, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Bytes `lo:hi` of tensor `r` (all of them by default) as a fresh 1-D uint8 CPU tensor."""
        inp = self.inputs[r.source]
        fd = self._fds[r.source]
        if fd is None:
            raise RuntimeFailure(f"input {inp.path} is not open", key=r.key, path=inp.path)
        if hi is None:
            hi = r.end - r.begin
        n = hi - lo
        offset = inp.data_start + r.begin + lo
        pf = self.prefetcher
        if pf is not None:
            buf = pf.get(r.source, offset, n)
            if buf is not None:
                self._check_still_there(fd, r, offset + n)
                with self._lock:
                    self.bytes_read += n
                size = TORCH_ELEMENT_SIZE.get(r.dtype, 1)
                # a tensor at an offset its element size does not divide cannot be viewed in place
                return buf if offset % size == 0 else buf.clone()
        buf = empty_bytes(n, pin=self.pin_memory)
        view = byte_view(buf)
        got = 0
        try:
            while got < n:
                k = os.preadv(fd, [view[got:got + _MAX_IO]], offset + got)
                if k == 0:
                    raise RuntimeFailure(
                        f"input {inp.path} is shorter than when the recipe was checked: tensor "
                        f"{r.key!r} needs bytes up to {offset + n}, the file ends at "
                        f"{offset + got} (was it truncated or replaced during the run?)",
                        key=r.key, path=inp.path)
                got += k
        except OSError as e:
            raise RuntimeFailure(f"cannot read tensor {r.key!r} from {inp.path}: {e.strerror}",
                                 key=r.key, path=inp.path) from None
        with self._lock:
            self.bytes_read += n
        return buf

    def _check_still_there(self, fd: int, r: Read, end: int) -> None:
        """Bytes read ahead came from the file as it was: fail as a direct read would if the file
        has shrunk since (truncated or replaced during the run)."""
        inp = self.inputs[r.source]
        try:
            size = os.fstat(fd).st_size
        except OSError as e:
            raise RuntimeFailure(f"cannot read tensor {r.key!r} from {inp.path}: {e.strerror}",
                                 key=r.key, path=inp.path) from None
        if size < end:
            raise RuntimeFailure(
                f"input {inp.path} is shorter than when the recipe was checked: tensor "
                f"{r.key!r} needs bytes up to {end}, the file ends at {size} (was it truncated "
                f"or replaced during the run?)", key=r.key, path=inp.path)

    def read(self, r: Read) -> torch.Tensor:
        """Tensor `r` with its own dtype and shape, on the CPU."""
        return view_as(self.read_raw(r), r.dtype, r.shape)
