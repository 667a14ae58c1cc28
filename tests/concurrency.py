"""A backend that counts its open readers across every process serving it.

``--backend python:tests/concurrency.py:counting:FILE`` serves ``N.bin``
(N KiB of a fixed pattern) and keeps, in FILE under an exclusive lock, how
many transfers are open now and the most there ever were at once: what a
limit on active sessions must bound, counted by the test, not the server.
"""
import fcntl
import os


def pattern(kib):
    return bytes(range(256)) * 4 * kib


def _update(path, delta):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        now, most = (int(x) for x in (os.pread(fd, 64, 0).decode().split() or ["0", "0"]))
        now += delta
        most = max(most, now)
        os.ftruncate(fd, 0)
        os.pwrite(fd, ("%d %d" % (now, most)).encode(), 0)
    finally:
        os.close(fd)


def read_counts(path):
    """``(open now, most at once)``."""
    with open(path) as f:
        fcntl.flock(f, fcntl.LOCK_SH)
        now, most = f.read().split()
    return int(now), int(most)


def counting(path):
    from zope.interface import implementer

    from txfbtftp import BytesReader, FileNotFound, IBackend

    class Counted(BytesReader):
        def close(self):
            super().close()
            _update(path, -1)

    @implementer(IBackend)
    class Counting:
        def get_reader(self, name, request):
            if not name.endswith(".bin") or not name[:-4].isdigit():
                raise FileNotFound()
            _update(path, +1)
            return Counted(pattern(int(name[:-4])))

    return Counting()
