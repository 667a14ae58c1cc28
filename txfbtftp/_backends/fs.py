"""Files under a root directory.

Reads share one open descriptor per file (keyed by device, inode and
modification time, so a replaced file gets a fresh one) and use ``pread``:
two thousand clients of one kernel image cost one descriptor and no
per-session buffer beyond a block.  Uploads go to a hidden temporary file in
the target directory and become visible only on commit (fsync, then link or
rename), so a partial upload never appears under its final name.  A writer
holds an exclusive lock on its temporary file: at start-up the temporary
files nobody holds (left by a crash, even a ``kill -9``) are removed, while
those another live process is writing stay; and no name of that pattern is
ever served or taken for an upload.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import tempfile

from zope.interface import implementer

from txfbtftp._interfaces import (ILifecycle, IReader, IWritableBackend, IWriter, TransferRequest, Unavailable,
                                  Unwritable)
from txfbtftp._observe.logs import log
from txfbtftp._protocol import errors

_Key = tuple[int, int, int]
#: An upload's temporary file: ``.NAME.XXXXXXXX.part`` (mkstemp's eight characters).
TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.part$")


class _SharedFile:
    __slots__ = ("fd", "refs")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.refs = 0


@implementer(IReader)
class FileReader:
    """Reads one file by offset from a shared descriptor.

    Reads ahead ``window`` blocks per system call (the requested window, at
    most ``READ_AHEAD``): a window of blocks then costs one ``pread``, and
    the buffer is used up by the end of the step.  A lock-step reader keeps
    the rest of what it read between steps, so its read-ahead shrinks as
    readers crowd in: all of them together read ahead at most
    ``BUDGET`` bytes at a time (ten thousand clients at once would hold ten
    thousand read-ahead buffers), down to one block per call, which holds
    nothing.
    """

    READ_AHEAD = 8
    BUDGET = 16 << 20
    #: The compiled lane (:mod:`txfbtftp._speedups`) may read for this
    #: class: it reads as :meth:`read` does, on the same slots.
    LANE = True
    __slots__ = ("size", "window", "_fs", "_key", "_fd", "_offset", "_buf", "_pos")

    def __init__(self, fs: FilesystemBackend, key: _Key, fd: int, size: int, window: int = 1) -> None:
        self.size: int | None = size
        self.window = window
        self._fs = fs
        self._key = key
        self._fd = fd
        self._offset = 0
        self._buf = b""
        self._pos = 0

    def read(self, n: int) -> bytes:
        pos = self._pos
        end = pos + n
        buf = self._buf
        if end < len(buf):
            self._pos = end
            return buf[pos:end]
        if end == len(buf):
            self._buf = b""  # used up: held no longer than needed
            self._pos = 0
            return buf[pos:]
        rest = buf[pos:]
        ahead = self.window
        if ahead == 1:
            ahead = max(1, min(self.READ_AHEAD, self.BUDGET // (max(1, self._fs.readers) * n)))
        chunk = os.pread(self._fd, n * ahead, self._offset)
        self._offset += len(chunk)
        if rest:
            chunk = rest + chunk
        if len(chunk) <= n:
            self._buf = b""
            self._pos = 0
            return chunk
        self._buf = chunk
        self._pos = n
        return chunk[:n]

    def fileno(self) -> int:
        """The descriptor this reader shares with the file's other readers."""
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            self._fd = -1
            self._buf = b""
            self._fs._release(self._key)


@implementer(IWriter)
class FileWriter:
    """A temporary file that becomes ``path`` on commit."""

    def __init__(self, path: str, overwrite: bool, mode: int) -> None:
        self.path = path
        self._overwrite = overwrite
        self._mode = mode
        directory, name = os.path.split(path)
        # Within NAME_MAX (255) whatever the name's length: "." + 8 + ".part" + "." take 15.
        fd, self.tmp = tempfile.mkstemp(prefix=".%s." % _prefix(name, 240), suffix=".part", dir=directory)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as e:
            raise _os_error(e) from e

    def commit(self) -> None:
        try:
            self._file.flush()
            os.fchmod(self._file.fileno(), self._mode)
            os.fsync(self._file.fileno())
            self._file.close()
            if self._overwrite:
                os.replace(self.tmp, self.path)
            else:
                os.link(self.tmp, self.path)  # fails if the name was taken meanwhile
                os.unlink(self.tmp)
            dfd = os.open(os.path.dirname(self.path), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            self.abort()
            raise _os_error(e) from e

    def abort(self) -> None:
        try:
            if not self._file.closed:
                self._file.close()  # may fail again to flush (disk full): the unlink still runs
        except OSError:
            pass
        finally:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


def _prefix(name: str, limit: int) -> str:
    """``name`` cut to at most ``limit`` bytes as the file system sees it."""
    return os.fsdecode(os.fsencode(name)[:limit])


def _os_error(e: OSError) -> errors.TFTPError:
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return errors.FileNotFound()
    if e.errno == errno.EEXIST:
        return errors.FileExists()
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return errors.DiskFull()
    if e.errno in (errno.EACCES, errno.EPERM, errno.EISDIR, errno.ELOOP, errno.EROFS):
        return errors.AccessViolation()
    return errors.TFTPError()


@implementer(IWritableBackend, ILifecycle)
class FilesystemBackend:
    """Serves ``root``; uploads only when ``writable``, replacing files only
    when ``overwrite``.

    :meth:`start` checks the root (the service calls it after ``twistd``
    chrooted, so the root is resolved where it is served from).
    """

    def __init__(self, root: str, writable: bool = False, overwrite: bool = False) -> None:
        self._configured = root
        self.root = os.path.realpath(root)
        self.writable = writable
        self.overwrite = overwrite
        umask = os.umask(0)
        os.umask(umask)
        self._file_mode = 0o666 & ~umask
        self._open: dict[_Key, _SharedFile] = {}
        #: Readers open (not yet closed).
        self.readers = 0

    def start(self) -> None:
        root = os.path.realpath(self._configured)
        try:
            st = os.stat(root)
        except FileNotFoundError:
            raise Unavailable("%s does not exist" % self._configured) from None
        except OSError as e:
            raise Unavailable("%s is not reachable by uid %d: %s"
                              % (self._configured, os.geteuid(), e.strerror)) from None
        if not stat.S_ISDIR(st.st_mode):
            raise Unavailable("%s is not a directory" % self._configured)
        if not os.access(root, os.R_OK | os.X_OK):
            raise Unavailable("%s is not readable by uid %d" % (self._configured, os.geteuid()))
        if self.writable and not os.access(root, os.W_OK | os.X_OK):
            raise Unwritable("%s is not writable by uid %d (uploads are on)" % (self._configured, os.geteuid()))
        self.root = root
        if self.writable:
            removed = remove_abandoned(root)
            if removed:
                log.info("removed {n} unfinished uploads under {root}", n=removed, root=root)

    def stop(self) -> None:
        pass

    def resolve(self, path: str) -> str:
        """The real path of ``path`` under the root; AccessViolation if it
        escapes; FileNotFound for an upload's temporary file."""
        rel = path.lstrip("/")
        if not rel or "\x00" in rel or any(TEMPORARY.match(part) for part in rel.split("/")):
            raise errors.FileNotFound()
        full = os.path.realpath(os.path.join(self.root, rel))
        if os.path.commonpath([self.root, full]) != self.root:
            raise errors.AccessViolation()
        return full

    def get_reader(self, path: str, request: TransferRequest) -> FileReader:
        return self.open(path, requested_window(request))

    def open(self, path: str, window: int = 1) -> FileReader:
        """A reader of ``path`` under the root, whoever asks, for a client
        taking ``window`` blocks at a time."""
        full = self.resolve(path)
        # Open first and ask the descriptor, so what is checked is what is
        # read; O_NONBLOCK keeps a FIFO from stalling the reactor.
        try:
            fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            raise _os_error(e) from e
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise errors.AccessViolation("Not a regular file")
        key = (st.st_dev, st.st_ino, st.st_mtime_ns)
        shared = self._open.get(key)
        if shared is None:
            shared = self._open[key] = _SharedFile(fd)
        else:
            os.close(fd)
        shared.refs += 1
        self.readers += 1
        return FileReader(self, key, shared.fd, st.st_size, window)

    def _release(self, key: _Key) -> None:
        self.readers -= 1
        shared = self._open.get(key)
        if shared is not None:
            shared.refs -= 1
            if shared.refs <= 0:
                del self._open[key]
                os.close(shared.fd)

    def get_writer(self, path: str, request: TransferRequest) -> FileWriter:
        if not self.writable:
            raise errors.AccessViolation("Uploads are disabled")
        full = self.resolve(path)
        if os.path.isdir(full):
            raise errors.AccessViolation("Not a regular file")
        if not self.overwrite and os.path.lexists(full):
            raise errors.FileExists()
        try:
            return FileWriter(full, self.overwrite, self._file_mode)
        except OSError as e:
            raise _os_error(e) from e


def requested_window(request: TransferRequest) -> int:
    """The blocks ``request``'s client takes at a time: the windowsize it
    asked for (granted, it is at most that), up to ``FileReader.READ_AHEAD``;
    one in lock-step."""
    try:
        window = int(request.options.get("windowsize", "1"))
    except ValueError:
        window = 1
    return max(1, min(FileReader.READ_AHEAD, window))


def remove_abandoned(root: str) -> int:
    """Remove the uploads' temporary files under ``root`` that no live writer
    holds (their writer's lock went with it); how many were removed."""
    removed = 0
    for directory, _dirs, names in os.walk(root):
        for name in names:
            if not TEMPORARY.match(name):
                continue
            path = os.path.join(directory, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            else:
                os.unlink(path)
                removed += 1
            finally:
                os.close(fd)
    return removed
