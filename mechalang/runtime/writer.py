"""Writing output files at their precomputed offsets, atomically.

For each output a temporary file `.<name>.mecha-tmp-<random>` is created next to the final path,
its full size is reserved up front (so a full disk fails before any work, with a message saying how
much is needed and free), the header is written, then each tensor is written with `pwrite` at
`data_start + begin` in whatever order tensors finish. When every output is complete, each file is
flushed to disk and renamed onto its final path. On failure `abort()` removes every temporary file:
no partial output is ever visible under the final name.

Large outputs (DIRECT_MIN and up, flushed ones) are written with direct I/O: the file is assembled
in aligned blocks that a writer thread writes with O_DIRECT as each completes (`blocks.py`), so
the disk writes while the workers compute and the page cache never fills with dirty pages that
the kernel would throttle the run on. Where the filesystem refuses O_DIRECT, and for small files,
tensors are written with buffered `pwrite`, and the kernel is asked to start writing dirty pages
back early, so that the final flush overlaps with computing instead of following it.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading

import torch

from ..runtime.plan import FolderOutput, OutputPlan, OutTensor
from ..units import format_bytes
from . import direct
from .blocks import BLOCK, MAX_OPEN, QUEUE, BlockWriter
from .errors import RuntimeFailure
from .reader import byte_view

_MAX_IO = 1 << 30
DIRECT_MIN = 64 << 20  # outputs at least this large are written with direct I/O
# the most memory the block writers of one output hold (blocks assembled, queued, being written)
DIRECT_MEMORY = (MAX_OPEN + QUEUE + 1) * BLOCK
_WRITEBACK_EVERY = 32 << 20  # ask for writeback after this many bytes written to a file
_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_FALLOCATE_ERRNOS = {errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOSYS", errno.EINVAL)}


def free_space(folder: str) -> int | None:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def temp_path_for(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.mecha-tmp-{secrets.token_hex(4)}")


def _not_enough_space(path: str, needed: int, free: int | None) -> RuntimeFailure:
    have = "" if free is None else f", {format_bytes(free)} free"
    return RuntimeFailure(f"not enough disk space for {path}: needs {format_bytes(needed)}{have}",
                          path=path)


class OutputWriter:
    """The temporary files of a run's outputs. `prepare()`, `write()` per tensor, then `commit()`;
    `abort()` (idempotent) on any failure."""

    def __init__(self, outputs: tuple[OutputPlan, ...], *, fsync: bool = True,
                 folders: tuple[FolderOutput, ...] = ()):
        self.outputs = outputs
        self.folders = folders
        self.temp_folders: dict[str, str] = {}  # final folder -> its temporary copy
        self.fsync = fsync
        self.temp_paths: list[str | None] = [None] * len(outputs)
        self._fds: list[int | None] = [None] * len(outputs)
        self.data_start: list[int] = [0] * len(outputs)
        self._unflushed: list[int] = [0] * len(outputs)
        self._lock = threading.Lock()
        self.bytes_written = [0] * len(outputs)
        self._blocks: list[BlockWriter | None] = [None] * len(outputs)
        self._direct_fds: list[int | None] = [None] * len(outputs)
        self.direct_bytes = 0  # written with O_DIRECT (for the benchmarks' timing line)
        self.wait_seconds = 0.0  # workers' time waiting for the block writers
        self.committed = False

    def direct_outputs(self) -> int:
        """How many outputs would be written with direct I/O (for the executor's memory budget)."""
        if not (self.fsync and direct.enabled()):
            return 0
        return sum(1 for o in self.outputs if o.data_bytes >= DIRECT_MIN)

    # -- setup ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        for f in self.folders:
            self._create_folder(f)
        for i, out in enumerate(self.outputs):
            self._create(i, out)

    def _create_folder(self, f: FolderOutput) -> None:
        parent = os.path.dirname(os.path.abspath(f.path))
        if not os.path.isdir(parent):
            raise RuntimeFailure(f"cannot write {f.path}: the folder {parent} does not exist",
                                 path=f.path)
        tmp = temp_path_for(f.path)
        try:
            os.mkdir(tmp)
        except OSError as e:
            raise RuntimeFailure(f"cannot write {f.path}: {e.strerror} (creating a folder in "
                                 f"{parent})", path=f.path) from None
        self.temp_folders[f.path] = tmp

    def _create(self, i: int, out: OutputPlan) -> None:
        path = out.path
        if out.folder:  # written inside its folder's temporary copy (subfolders made there)
            path = self._in_temp_folder(out)
            os.makedirs(os.path.dirname(path), exist_ok=True)
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise RuntimeFailure(f"cannot write {path}: it is a folder", path=path)
        if not os.path.isdir(folder):
            raise RuntimeFailure(f"cannot write {path}: the folder {folder} does not exist",
                                 path=path)
        tmp = temp_path_for(path)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                         0o666)
        except PermissionError:
            raise RuntimeFailure(f"cannot write {path}: no permission to create files in {folder}",
                                 path=path) from None
        except OSError as e:
            if e.errno in _SPACE_ERRNOS:
                raise _not_enough_space(path, 0, free_space(folder)) from None
            raise RuntimeFailure(f"cannot write {path}: {e.strerror} (creating a file in {folder})",
                                 path=path) from None
        self.temp_paths[i] = tmp
        self._fds[i] = fd
        header = out.header_bytes()
        total = len(header) + out.data_bytes
        self._reserve(fd, path, folder, total)
        self.data_start[i] = len(header)
        if self.fsync and out.data_bytes >= DIRECT_MIN:
            self._start_direct(i, out, tmp, total, len(header))
        self._pwrite(i, header, 0, None)

    def _start_direct(self, i: int, out: OutputPlan, tmp: str, total: int, start: int) -> None:
        """Open the temp file a second time with O_DIRECT and write it in blocks from now on
        (nothing changes where the filesystem refuses O_DIRECT)."""
        try:
            dfd = direct.open_direct(tmp, os.O_WRONLY)
        except OSError:
            dfd = None
        if dfd is None:
            return
        self._direct_fds[i] = dfd
        spans: list[tuple[int, int, str | None]] = [(0, start, None)]
        spans += sorted((start + t.begin, start + t.end, t.key) for t in out.tensors
                        if t.end > t.begin)
        path = out.path
        self._blocks[i] = BlockWriter(
            dfd, self._fds[i], total, spans,
            lambda e, key: self._write_error(path, e, key))

    def _reserve(self, fd: int, path: str, folder: str, total: int) -> None:
        free = free_space(folder)
        fallocate = getattr(os, "posix_fallocate", None)
        if fallocate is not None and total > 0:
            try:
                fallocate(fd, 0, total)
                return
            except OSError as e:
                if e.errno in _SPACE_ERRNOS:
                    raise _not_enough_space(path, total, free) from None
                if e.errno not in _NO_FALLOCATE_ERRNOS:
                    raise RuntimeFailure(f"cannot reserve {format_bytes(total)} for {path}: "
                                         f"{e.strerror}", path=path) from None
        # no fallocate here: compare with the free space, then size the file (sparse)
        if free is not None and free < total:
            raise _not_enough_space(path, total, free)
        try:
            os.ftruncate(fd, total)
        except OSError as e:
            if e.errno in _SPACE_ERRNOS:
                raise _not_enough_space(path, total, free) from None
            raise RuntimeFailure(f"cannot size {path}: {e.strerror}", path=path) from None

    # -- writing ----------------------------------------------------------------------------------

    def write(self, i: int, t: OutTensor, value: torch.Tensor, lo: int = 0,
              hi: int | None = None) -> None:
        """Write the contiguous CPU tensor `value` as bytes `lo:hi` (all by default) of output
        tensor `t` of output `i`."""
        if hi is None:
            hi = t.nbytes
        n = value.numel() * value.element_size()
        if n != hi - lo or not 0 <= lo <= hi <= t.nbytes:
            raise RuntimeFailure(f"internal error: {n} bytes for bytes {lo}:{hi} of tensor "
                                 f"{t.key!r} ({t.nbytes} bytes)", key=t.key,
                                 path=self.outputs[i].path)
        if n == 0:
            return
        view = byte_view(value)
        self._pwrite(i, view, self.data_start[i] + t.begin + lo, t.key)
        with self._lock:
            self.bytes_written[i] += n
            self._unflushed[i] += n
            kick = self.fsync and self._unflushed[i] >= _WRITEBACK_EVERY \
                and self._blocks[i] is None
            if kick:
                self._unflushed[i] = 0
        if kick:
            self._start_writeback(i)

    def _pwrite(self, i: int, data, offset: int, key: str | None) -> None:
        fd = self._fds[i]
        path = self.outputs[i].path
        if fd is None:
            raise RuntimeFailure(f"internal error: {path} is not open for writing", path=path)
        view = memoryview(data)
        blocks = self._blocks[i]
        if blocks is not None:
            blocks.put(offset, view)
            return
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(fd, view[done:done + _MAX_IO], offset + done)
        except OSError as e:
            raise self._write_error(path, e, key) from None

    @staticmethod
    def _write_error(path: str, e: OSError, key: str | None) -> RuntimeFailure:
        what = f" (tensor {key!r})" if key else ""
        if e.errno in _SPACE_ERRNOS:
            msg = f"disk full while writing {path}{what}"
            free = free_space(os.path.dirname(os.path.abspath(path)))
            if free is not None:
                msg += f": {format_bytes(free)} free"
        elif e.errno == errno.EIO:
            msg = f"I/O error while writing {path}{what}: the disk reported a failure"
        else:
            msg = f"cannot write {path}{what}: {e.strerror}"
        return RuntimeFailure(msg, key=key, path=path)

    def _start_writeback(self, i: int) -> None:
        """Ask the kernel to start writing this file's dirty pages now (no waiting), so the final
        fsync has little left to do."""
        fd = self._fds[i]
        advise = getattr(os, "posix_fadvise", None)
        if fd is None or advise is None:
            return
        try:
            advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            pass

    # -- ending -----------------------------------------------------------------------------------

    def commit(self) -> None:
        """Flush every output and move each onto its final path."""
        for i, out in enumerate(self.outputs):
            fd = self._fds[i]
            if fd is None:
                continue
            try:
                blocks = self._blocks[i]
                if blocks is not None:
                    self._blocks[i] = None
                    try:
                        blocks.finish()
                        self.direct_bytes += blocks.direct_bytes
                        self.wait_seconds += blocks.wait_seconds
                    except OSError as e:
                        raise self._write_error(out.path, e, None) from None
                    finally:
                        blocks.close()
                        self._close_direct(i)
                if self.fsync:
                    os.fsync(fd)
            except OSError as e:
                raise self._write_error(out.path, e, None) from None
            finally:
                self._fds[i] = None
                os.close(fd)
        folders = []
        for i, out in enumerate(self.outputs):
            tmp = self.temp_paths[i]
            if tmp is None:
                continue
            try:
                if out.trim_lora:
                    from .trim import trim_lora_file

                    trimmed = temp_path_for(out.path)
                    try:
                        trim_lora_file(tmp, trimmed, fsync=self.fsync)
                    except BaseException:
                        if os.path.exists(trimmed):
                            os.unlink(trimmed)
                        raise
                    os.unlink(tmp)
                    self.temp_paths[i] = tmp = trimmed
                final = out.path if not out.folder else self._in_temp_folder(out)
                for name, text in out.sidecars:  # before the output: it appears complete
                    side = os.path.join(os.path.dirname(os.path.abspath(final)), name)
                    with open(side + ".tmp", "w", encoding="utf-8") as f:
                        f.write(text)
                    os.replace(side + ".tmp", side)
                os.replace(tmp, final)
            except OSError as e:
                done = [o.path for j, o in enumerate(self.outputs) if j < i]
                note = f" ({', '.join(done)} already written)" if done else ""
                raise RuntimeFailure(f"cannot move the finished file onto {out.path}: "
                                     f"{e.strerror}{note}", path=out.path) from None
            self.temp_paths[i] = None
            folder = os.path.dirname(os.path.abspath(final))
            if folder not in folders:
                folders.append(folder)
        if self.fsync:
            for folder in folders:
                _fsync_dir(folder)
        for f in self.folders:
            self._commit_folder(f)
        self.committed = True

    def _in_temp_folder(self, out: OutputPlan) -> str:
        """Where a file of a folder output is written: the same place in the temporary folder."""
        return os.path.join(self.temp_folders[out.folder], os.path.relpath(out.path, out.folder))

    def _commit_folder(self, f: FolderOutput) -> None:
        """Write a folder's small files into its temporary copy, then rename it into place (an
        existing folder there, which preflight allowed with --overwrite, is moved aside first and
        removed after)."""
        import shutil

        tmp = self.temp_folders[f.path]
        try:
            for src, name in f.copies:  # names may have subfolders (`unet/config.json`)
                os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
                shutil.copyfile(src, os.path.join(tmp, name))
            for name, text in f.files:
                os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
                with open(os.path.join(tmp, name), "w", encoding="utf-8") as fh:
                    fh.write(text)
            if self.fsync:
                _fsync_dir(tmp)
            aside = None
            if os.path.lexists(f.path):
                aside = temp_path_for(f.path)
                os.rename(f.path, aside)
            os.rename(tmp, f.path)
            del self.temp_folders[f.path]
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
            if self.fsync:
                _fsync_dir(os.path.dirname(os.path.abspath(f.path)))
        except OSError as e:
            raise RuntimeFailure(f"cannot finish the folder {f.path}: {e.strerror or e}",
                                 path=f.path) from None

    def _close_direct(self, i: int) -> None:
        dfd = self._direct_fds[i]
        if dfd is not None:
            self._direct_fds[i] = None
            try:
                os.close(dfd)
            except OSError:
                pass

    def abort(self) -> None:
        """Close and remove every temporary file. Safe to call more than once."""
        for i, blocks in enumerate(self._blocks):
            if blocks is not None:
                self._blocks[i] = None
                blocks.close()
            self._close_direct(i)
        for i, fd in enumerate(self._fds):
            if fd is not None:
                self._fds[i] = None
                try:
                    os.close(fd)
                except OSError:
                    pass
        for i, tmp in enumerate(self.temp_paths):
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
                except OSError:
                    continue
                self.temp_paths[i] = None
        if self.temp_folders:
            import shutil

            for final, tmp in list(self.temp_folders.items()):
                shutil.rmtree(tmp, ignore_errors=True)
                del self.temp_folders[final]


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
