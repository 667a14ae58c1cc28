"""The cache's directory: bodies, their metadata, the index and eviction.

For each entry the directory holds ``<h>.json`` (metadata, written last: its
rename is the commit) and ``<h>.<token>.data`` (the body, renamed into place
first; a new token per fetch, so replacing an entry is one rename and old
readers keep the old file through their descriptor), where ``<h>`` is the
SHA-256 of the origin's key for the path.  Bodies in progress live in
``tmp/``, which start-up clears.  The metadata holds the key, size, SHA-256,
ETag, Last-Modified and the time of the last validation; start-up rebuilds
the index from it, drops entries whose body is missing or of the wrong size,
and each entry's SHA-256 is checked on its first use (in a thread) before it
is served.  The total size is kept under ``max_size`` by evicting the least
recently used entries that nobody is reading.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
import time
from collections import OrderedDict
from typing import Any
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from zope.interface import implementer

from txfbtftp._backends.fs import FileReader, FilesystemBackend
from txfbtftp._interfaces import IReader
from txfbtftp._observe.logs import log
from txfbtftp._protocol import errors
from txfbtftp._types import IHTTPReactor

_VERSION = 1


def entry_name(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def _sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Entry:
    """A complete body on disk and what is known about it."""

    __slots__ = ("key", "name", "data", "size", "sha256", "etag", "last_modified", "validated",
                 "verified", "readers", "checking")

    def __init__(self, key: str, data: str, size: int, sha256: str, etag: str | None,
                 last_modified: str | None, validated: float, verified: bool) -> None:
        self.key = key
        self.name = entry_name(key)
        self.data = data
        self.size = size
        self.sha256 = sha256
        self.etag = etag
        self.last_modified = last_modified
        self.validated = validated
        self.verified = verified
        self.readers = 0
        self.checking: list[Deferred[bool]] | None = None

    def meta(self) -> dict[str, Any]:
        return {"version": _VERSION, "key": self.key, "data": self.data, "size": self.size,
                "sha256": self.sha256, "etag": self.etag, "last_modified": self.last_modified,
                "validated": self.validated}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Entry:
        if meta.get("version") != _VERSION:
            raise ValueError("unknown version")
        entry = cls(str(meta["key"]), str(meta["data"]), int(meta["size"]), str(meta["sha256"]),
                    meta.get("etag"), meta.get("last_modified"), float(meta["validated"]), False)
        if not entry.data.startswith(entry.name + ".") or "/" in entry.data:
            raise ValueError("metadata does not match its name")
        return entry


@implementer(IReader)
class EntryReader:
    """A hit: a file reader, counted so eviction spares the entry."""

    __slots__ = ("size", "read", "_reader", "_entry")

    def __init__(self, reader: FileReader, entry: Entry) -> None:
        self.size = reader.size
        self.read = reader.read
        self._reader = reader
        self._entry: Entry | None = entry
        entry.readers += 1

    def close(self) -> None:
        if self._entry is not None:
            self._entry.readers -= 1
            self._entry = None
            self._reader.close()


class CacheStore:
    """The entries of one directory, least recently used first."""

    def __init__(self, directory: str, reactor: IHTTPReactor, max_size: int,
                 clock: Callable[[], float]) -> None:
        self.directory = os.path.realpath(directory)
        self.max_size = max_size
        self.used = 0
        self._reactor = reactor
        self._clock = clock
        self._tmp = os.path.join(self.directory, "tmp")
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._committing: set[str] = set()
        self._files = FilesystemBackend(self.directory)

    def load(self) -> None:
        """Create the directory if need be, clear ``tmp/`` and rebuild the index."""
        os.makedirs(self._tmp, exist_ok=True)
        self._files.start()
        for name in os.listdir(self._tmp):
            os.unlink(os.path.join(self._tmp, name))
        names = os.listdir(self.directory)
        found: list[tuple[float, Entry]] = []
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                entry, atime = self._read_meta(name)
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warn("cache: dropping {name}: {err}", name=name, err=e)
                self._unlink(name)
                continue
            found.append((atime, entry))
        found.sort(key=lambda item: item[0])
        for _, entry in found:
            self._entries[entry.name] = entry
            self.used += entry.size
        referenced = {e.data for e in self._entries.values()}
        for name in names:
            if name.endswith(".data") and name not in referenced:
                os.unlink(os.path.join(self.directory, name))
        self._evict()
        log.info("cache {dir}: {n} entries, {used} bytes", dir=self.directory, n=len(self._entries), used=self.used)

    def _read_meta(self, name: str) -> tuple[Entry, float]:
        with open(os.path.join(self.directory, name), encoding="utf-8") as f:
            entry = Entry.from_meta(json.load(f))
        if name != entry.name + ".json":
            raise ValueError("metadata does not match its name")
        st = os.stat(os.path.join(self.directory, entry.data))
        if st.st_size != entry.size:
            raise ValueError("%d bytes on disk, %d expected" % (st.st_size, entry.size))
        return entry, st.st_atime

    def get(self, name: str) -> Entry | None:
        return self._entries.get(name)

    def keys(self) -> list[str]:
        """The cached keys, least recently used first."""
        return [e.key for e in self._entries.values()]

    def temporary(self, prefix: str) -> tuple[int, str]:
        """A new file in ``tmp/`` for a body in progress: ``(fd, path)``."""
        return tempfile.mkstemp(prefix=prefix + ".", dir=self._tmp)

    def open(self, entry: Entry) -> EntryReader | None:
        """A reader of ``entry``, or None (and the entry dropped) if its body is damaged."""
        try:
            reader: FileReader | None = self._files.open(entry.data)
        except errors.TFTPError:
            reader = None
        if reader is None or reader.size != entry.size:
            log.warn("cache: {key!r} is damaged on disk; fetching it again", key=entry.key)
            if reader is not None:
                reader.close()
            self.remove(entry)
            return None
        self._entries.move_to_end(entry.name)
        self._touch(entry)
        return EntryReader(reader, entry)

    def _touch(self, entry: Entry) -> None:
        """Record the use in the body's access time: the LRU order start-up
        restores (set explicitly, whatever the mount's atime policy)."""
        path = os.path.join(self.directory, entry.data)
        try:
            os.utime(path, ns=(time.time_ns(), os.stat(path).st_mtime_ns))
        except OSError:
            pass

    def verify(self, entry: Entry) -> Deferred[bool]:
        """Fires True if the body still has its SHA-256 (checked once per run)."""
        d: Deferred[bool] = Deferred()
        if entry.checking is not None:
            entry.checking.append(d)
            return d
        entry.checking = [d]
        path = os.path.join(self.directory, entry.data)

        def check() -> bool:
            try:
                return _sha256_of(path) == entry.sha256
            except OSError:
                return False

        def done(ok: object) -> None:
            good = ok is True
            waiters, entry.checking = entry.checking or [], None
            if good:
                entry.verified = True
            elif self._entries.get(entry.name) is entry:
                log.warn("cache: {key!r} fails its checksum; fetching it again", key=entry.key)
                self.remove(entry)
            for w in waiters:
                w.callback(good)

        deferToThreadPool(self._reactor, self._reactor.getThreadPool(), check).addBoth(done)
        return d

    def revalidated(self, entry: Entry, etag: str | None, last_modified: str | None) -> None:
        """The origin says ``entry`` is current (304)."""
        entry.validated = self._clock()
        if etag is not None:
            entry.etag = etag
        if last_modified is not None:
            entry.last_modified = last_modified
        if self._entries.get(entry.name) is entry:
            try:
                self._write_meta(entry, durable=False)
            except OSError as e:
                log.warn("cache: cannot update {key!r}: {err}", key=entry.key, err=e)

    def commit(self, key: str, fd: int, tmp: str, size: int, sha256: str, etag: str | None,
               last_modified: str | None) -> Deferred[bool]:
        """Make the complete body in ``tmp`` an entry (``tmp`` is renamed).  The
        syncing is done in a thread: an fsync of a large file would stall
        every session.  Fires with whether the entry was stored (a failure is
        logged)."""
        name = entry_name(key)
        data = "%s.%s.data" % (name, secrets.token_hex(6))
        entry = Entry(key, data, size, sha256, etag, last_modified, self._clock(), True)
        final = os.path.join(self.directory, data)
        self._committing.add(name)

        def store() -> None:
            os.fsync(fd)
            os.rename(tmp, final)
            try:
                self._write_meta(entry, durable=True)
            except OSError:
                os.unlink(final)
                raise

        def stored(_: object) -> bool:
            old = self._entries.pop(name, None)
            if old is not None:
                self.used -= old.size
                self._unlink(old.data)
            self._entries[name] = entry
            self.used += entry.size
            self._evict()
            return True

        def failed(failure: Failure) -> bool:
            log.warn("cache: cannot store {key!r}: {err}", key=key, err=failure.getErrorMessage())
            return False

        def finished(result: object) -> object:
            self._committing.discard(name)
            return result

        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), store)
        return d.addBoth(finished).addCallbacks(stored, failed)

    def _write_meta(self, entry: Entry, durable: bool) -> None:
        fd, tmp = tempfile.mkstemp(suffix=".json", dir=self._tmp)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry.meta(), f)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, os.path.join(self.directory, entry.name + ".json"))
        except BaseException:
            os.unlink(tmp)
            raise
        if durable:
            _fsync_dir(self.directory)

    def _evict(self) -> None:
        if self.used <= self.max_size:
            return
        for entry in list(self._entries.values()):
            if self.used <= self.max_size:
                break
            if entry.readers == 0:
                log.info("cache: evicting {key!r} ({size} bytes)", key=entry.key, size=entry.size)
                self.remove(entry)

    def remove(self, entry: Entry) -> None:
        if self._entries.get(entry.name) is not entry:
            return
        del self._entries[entry.name]
        self.used -= entry.size
        if entry.name not in self._committing:  # else a new one is being written
            self._unlink(entry.name + ".json")
        self._unlink(entry.data)

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.directory, name))
        except FileNotFoundError:
            pass
