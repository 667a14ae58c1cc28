"""The file locks that let several processes share one cache directory.

All are ``flock`` locks: they belong to an open file (not to a process, as
``fcntl``'s record locks do, which any ``close`` of the same file in the
process would drop), and the kernel releases them when the file's last
descriptor closes, so a process killed with ``kill -9`` holds nothing.

- ``lock``: held exclusively for each read-modify-write of the index, and
  nothing else: a few system calls.
- ``users``: every process using the directory holds it shared while it
  does; one that gets it exclusively at start-up is alone (a cold start).
- a fill's temporary file: held exclusively by the process filling it; a
  process that gets it has found the filler gone.
- an entry's body: held shared by each process reading it (on the one
  descriptor its readers share); eviction takes it exclusively, without
  waiting, so a body being read is never evicted.
"""
from __future__ import annotations

import fcntl
import os
from types import TracebackType


def try_lock(fd: int, exclusive: bool = True) -> bool:
    """Lock ``fd`` without waiting; False if another open file holds it."""
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def share(fd: int) -> None:
    """Hold ``fd`` shared, waiting for an exclusive holder (held briefly, by an
    evictor or a liveness test) to let go; turns an exclusive lock shared."""
    fcntl.flock(fd, fcntl.LOCK_SH)


def unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)


class DirectoryLock:
    """The directory's ``lock`` file, held exclusively for a ``with`` block
    (blocks nest: the outermost one locks and unlocks)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        self._depth = 0

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DirectoryLock:
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._depth += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
