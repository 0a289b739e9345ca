"""A fault-injecting FUSE passthrough filesystem: a device that fails ``fsync`` or ``write`` on demand.

    python tests/support/faultfs.py BACKING MOUNTPOINT CONTROL

mounts ``BACKING`` at ``MOUNTPOINT`` (libfuse 3 through ``mfusepy``, single-threaded, in the
foreground: the process *is* the filesystem; unmount it to stop it).  Every operation passes
through to ``BACKING`` -- except that, while a rule in the ``CONTROL`` directory matches, the
kernel gets ``EIO`` back, exactly as from a failing disk, and so does the process that made the
system call (SQLite inside ``syncref serve``): the fault is at the OS boundary, not in Python.

A rule is a file ``CONTROL/<op>`` (``op`` is ``fsync``, ``write`` or ``read``) holding ``GLOB [COUNT]``:
the operation fails on files whose name matches ``GLOB`` (``fnmatch`` on the base name), for the
next ``COUNT`` calls (default: until the rule is removed).  A rule is re-read when its file
changes, which restarts its count.  ``fsync`` also covers ``fdatasync`` and the directory fsync
(``fsyncdir``).  Each injected fault is appended to ``CONTROL/log`` as ``EIO <op> <path>``, so a
test can tell the fault was hit.

A failed ``fsync`` here leaves the bytes written before it in the backing file (the device kept
them, it only could not confirm it); a failed ``write`` writes nothing.  What Linux does to its
page cache after a real writeback error (the "fsyncgate" behaviour: the dirty pages are marked
clean, a later fsync succeeds) is not modelled beyond this: the point is what the *process* is
told.  Without ``writeback_cache`` the kernel sends every write through to this process as it
happens (SQLite's shared-memory index is mmapped, so ``direct_io`` is not used).
"""

from __future__ import annotations

import errno
import fnmatch
import os
import sys
from pathlib import Path
from typing import Any

import mfusepy as fuse  # type: ignore[import-untyped]


class Rules:
    """The ``CONTROL/<op>`` files, re-read when they change."""

    def __init__(self, control: Path) -> None:
        self.control = control
        self._seen: dict[str, tuple[float, int] | None] = {}
        self._rule: dict[str, tuple[str, int | None]] = {}
        self._hits: dict[str, int] = {}

    def _load(self, op: str) -> tuple[str, int | None] | None:
        path = self.control / op
        try:
            st = path.stat()
        except FileNotFoundError:
            self._seen[op] = None
            self._rule.pop(op, None)
            return None
        key = (st.st_mtime, st.st_ino)
        if self._seen.get(op) != key:
            words = path.read_text().split()
            self._seen[op] = key
            self._rule[op] = (words[0] if words else "*", int(words[1]) if len(words) > 1 else None)
            self._hits[op] = 0
        return self._rule.get(op)

    def fail(self, op: str, path: str) -> None:
        rule = self._load(op)
        if rule is None:
            return
        glob, count = rule
        if not fnmatch.fnmatch(os.path.basename(path), glob):
            return
        if count is not None and self._hits[op] >= count:
            return
        self._hits[op] += 1
        with open(self.control / "log", "a") as f:
            f.write(f"EIO {op} {path}\n")
        raise fuse.FuseOSError(errno.EIO)


class FaultFS(fuse.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, root: Path, control: Path) -> None:
        self.root = str(root)
        self.rules = Rules(control)

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    # --- metadata ---

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._full(path), amode):
            raise fuse.FuseOSError(errno.EACCES)
        return 0

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._full(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._full(path), uid, gid)
        return 0

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        try:
            st = os.fstat(fh) if fh is not None else os.lstat(self._full(path))
        except OSError as exc:
            raise fuse.FuseOSError(exc.errno) from None
        out = {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid", "st_ino")}
        out.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return out

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._full(path))]

    def readlink(self, path: str) -> str:
        return os.readlink(self._full(path))

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._full(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._full(path))
        return 0

    def unlink(self, path: str) -> int:
        os.unlink(self._full(path))
        return 0

    def rename(self, old: str, new: str) -> int:
        os.rename(self._full(old), self._full(new))
        return 0

    def link(self, target: str, source: str) -> int:
        os.link(self._full(source), self._full(target))
        return 0

    def symlink(self, target: str, source: str) -> int:
        os.symlink(source, self._full(target))
        return 0

    def statfs(self, path: str) -> dict[str, Any]:
        st = os.statvfs(self._full(path))
        return {k: getattr(st, k) for k in ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                                            "f_files", "f_flag", "f_frsize", "f_namemax")}

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            os.utime(self._full(path))
        else:
            os.utime(self._full(path), ns=times)
        return 0

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._full(path), length)
        return 0

    # --- files ---

    def open(self, path: str, flags: int) -> int:
        return os.open(self._full(path), flags & ~os.O_APPEND)

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        return os.open(self._full(path), (flags & ~os.O_APPEND) | os.O_CREAT, mode)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self.rules.fail("read", path)
        return os.pread(fh, size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self.rules.fail("write", path)
        return os.pwrite(fh, data, offset)

    def flush(self, path: str, fh: int) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        self.rules.fail("fsync", path)
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        self.rules.fail("fsync", path)
        return 0


def main(argv: list[str]) -> int:
    backing, mountpoint, control = (Path(a) for a in argv)
    fuse.FUSE(FaultFS(backing, control), str(mountpoint), foreground=True, nothreads=True,
              fsname="syncref-faultfs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
