"""A local disk cache in front of a slow origin (an :class:`~txfbtftp.origin.IOrigin`).

A hit is served from disk like the filesystem backend serves it.  A miss
fetches once however many clients ask at the same moment: the first request
starts a *flight*, everyone else joins it, and all of them read the body from
the temporary file while it is being written, waiting only when they catch up
with the origin.  The entry becomes visible when the body is complete,
matches its announced length and is on disk (fsync, rename).  After
``revalidate`` seconds an entry is checked with the origin (If-None-Match /
If-Modified-Since): 304 keeps it, a new body replaces it, and an origin that
is down leaves it served as it is.  The total size is kept under ``max_size``
by evicting the least recently used entries that nobody is reading.

The directory holds, for each entry, ``<h>.json`` (metadata, written last:
its rename is the commit) and ``<h>.<token>.data`` (the body, renamed into
place first; a new token per fetch, so replacing an entry is one rename and
old readers keep the old file through their descriptor), where ``<h>`` is the
SHA-256 of the origin's key for the path.  Bodies in progress live in
``tmp/``, which start-up clears.  The metadata holds the key, size, SHA-256,
ETag, Last-Modified and the time of the last validation; start-up rebuilds the
index from it, drops entries whose body is missing or of the wrong size, and
checks each entry's SHA-256 on its first use (in a thread) before serving it.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from zope.interface import implementer

from txfbtftp import errors
from txfbtftp.backends.fs import FilesystemBackend
from txfbtftp.interfaces import IBackend, IReader, TransferRequest
from txfbtftp.logs import log
from txfbtftp.origin import OriginResponse

_CHUNK = 256 * 1024
_VERSION = 1


def _name(key: str) -> str:
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


class _Entry:
    """A complete body on disk and what is known about it."""

    __slots__ = ("key", "name", "data", "size", "sha256", "etag", "last_modified", "validated",
                 "verified", "readers", "checking")

    def __init__(self, key: str, data: str, size: int, sha256: str, etag: Optional[str],
                 last_modified: Optional[str], validated: float, verified: bool) -> None:
        self.key = key
        self.name = _name(key)
        self.data = data
        self.size = size
        self.sha256 = sha256
        self.etag = etag
        self.last_modified = last_modified
        self.validated = validated
        self.verified = verified
        self.readers = 0
        self.checking: Optional[List[Deferred]] = None

    def meta(self) -> Dict[str, Any]:
        return {"version": _VERSION, "key": self.key, "data": self.data, "size": self.size,
                "sha256": self.sha256, "etag": self.etag, "last_modified": self.last_modified,
                "validated": self.validated}

    @classmethod
    def from_meta(cls, meta: Dict[str, Any]) -> "_Entry":
        if meta.get("version") != _VERSION:
            raise ValueError("unknown version")
        entry = cls(str(meta["key"]), str(meta["data"]), int(meta["size"]), str(meta["sha256"]),
                    meta.get("etag"), meta.get("last_modified"), float(meta["validated"]), False)
        if not entry.data.startswith(entry.name + ".") or "/" in entry.data:
            raise ValueError("metadata does not match its name")
        return entry


@implementer(IReader)
class _EntryReader:
    """A hit: the filesystem backend's reader, counted so eviction spares it."""

    __slots__ = ("size", "read", "_reader", "_entry")

    def __init__(self, reader: Any, entry: _Entry) -> None:
        self.size = reader.size
        self.read = reader.read
        self._reader = reader
        self._entry: Optional[_Entry] = entry
        entry.readers += 1

    def close(self) -> None:
        if self._entry is not None:
            self._entry.readers -= 1
            self._entry = None
            self._reader.close()


class _Flight:
    """One fetch from the origin, shared by every request that arrives while
    it runs.

    Until the origin answers, requests wait on it; once a body arrives it is
    written to a temporary file, and each request gets a :class:`_FillReader`
    that follows the file as it grows.
    """

    def __init__(self, cache: "CacheBackend", path: str, key: str, entry: Optional[_Entry]) -> None:
        self.cache = cache
        self.path = path
        self.key = key
        self.name = _name(key)
        self.entry = entry
        self.waiters: List[Deferred] = []
        self.filling = False
        self.done = False
        self.error: Optional[errors.TFTPError] = None
        self.size: Optional[int] = None
        self.written = 0
        self.fd = -1
        self.tmp: Optional[str] = None
        self.refs = 0
        self.pending: List[Tuple["_FillReader", int, Deferred]] = []
        self._hash = hashlib.sha256()
        self._response: Optional[OriginResponse] = None

    def wait(self) -> Deferred:
        d: Deferred = Deferred()
        self.waiters.append(d)
        return d

    def _resolve(self, outcome: Any) -> None:
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.callback(outcome)

    def _reject(self, error: errors.TFTPError) -> None:
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.errback(Failure(error))

    # -- the origin's answer ----------------------------------------------------
    def start(self) -> None:
        entry = self.entry
        if entry is None:
            d = maybeDeferred(self.cache.origin.fetch, self.path)
        else:
            d = maybeDeferred(self.cache.origin.fetch, self.path, entry.etag, entry.last_modified)
        d.addCallbacks(self._answered, self._refused)
        d.addErrback(self._crashed)

    def _answered(self, response: OriginResponse) -> None:
        if response.status == 304 and self.entry is not None:
            self.cache._land(self)
            self.cache._revalidated(self.entry, response)
            self._resolve(self.entry)
            return
        self._response = response
        self.size = response.size
        self.fd, self.tmp = tempfile.mkstemp(prefix=self.name[:16] + ".", dir=self.cache._tmp)
        self.refs = 1
        self.filling = True
        self._resolve(self)
        self._pull()

    def _refused(self, failure: Failure) -> None:
        self.cache._land(self)
        error = failure.value if isinstance(failure.value, errors.TFTPError) else None
        if error is None:
            log.failure("fetching {key!r} failed", failure, key=self.key)
            error = errors.TFTPError()
        entry = self.entry
        if entry is not None:
            if type(error) is errors.TFTPError:
                log.warn("{key!r}: origin unavailable, serving the cached copy", key=self.key)
                self._resolve(entry)
                return
            self.cache._remove(entry)
        self._reject(error)

    def _crashed(self, failure: Failure) -> None:
        log.failure("cache flight for {key!r} crashed", failure, key=self.key)
        if self.filling:
            self._fail(errors.TFTPError())
            return
        self.cache._land(self)
        if self._response is not None and self._response.body is not None:
            self._response.body.close()
        self._reject(errors.TFTPError())

    # -- copying the body -------------------------------------------------------
    def _pull(self) -> None:
        body = self._response.body
        while not self.done:
            try:
                data = body.readsome(_CHUNK)
            except errors.TFTPError as e:
                self._fail(e)
                return
            if isinstance(data, Deferred):
                data.addCallbacks(self._arrived, self._broken)
                data.addErrback(self._crashed)
                return
            self._store(data)

    def _arrived(self, data: bytes) -> None:
        self._store(data)
        self._pull()

    def _broken(self, failure: Failure) -> None:
        error = failure.value if isinstance(failure.value, errors.TFTPError) else errors.TFTPError()
        self._fail(error)

    def _store(self, data: bytes) -> None:
        if self.done:
            return
        if not data:
            self._finish()
            return
        try:
            view = memoryview(data)
            while view:
                n = os.pwrite(self.fd, view, self.written)
                self.written += n
                view = view[n:]
        except OSError as e:
            log.warn("{key!r}: cannot write the cache: {err}", key=self.key, err=e)
            self._fail(errors.TFTPError())
            return
        self._hash.update(data)
        self._wake()

    def _finish(self) -> None:
        response = self._response
        if self.size is not None and self.written != self.size:
            log.warn("{key!r}: got {n} of {size} bytes", key=self.key, n=self.written, size=self.size)
            self._fail(errors.TFTPError())
            return
        self.size = self.written
        self.done = True
        self._wake()
        if not response.body.complete:
            log.info("{key!r}: body of unknown length ended by a close; served, not cached", key=self.key)
        elif self.written > self.cache.max_size:
            log.info("{key!r}: {n} bytes is more than the whole cache; served, not cached",
                     key=self.key, n=self.written)
        else:
            # Latecomers keep joining this flight (reading the finished file)
            # until the entry is in the index.
            self.cache._commit(self, response, self._hash.hexdigest()).addBoth(self._committed)
            return
        self._committed(None)

    def _committed(self, _: Any) -> None:
        self._discard()
        self.cache._land(self)
        self.release()

    def _fail(self, error: errors.TFTPError) -> None:
        if self.done:
            return
        self.done = True
        self.error = error
        self.cache._land(self)
        body = self._response.body if self._response is not None else None
        if body is not None:
            body.close()
        self._discard()
        self._wake()
        self.release()

    def _discard(self) -> None:
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = None

    def _wake(self) -> None:
        pending, self.pending = self.pending, []
        for reader, n, d in pending:
            if reader.closed:
                continue
            if reader.offset + n <= self.written or (self.done and self.error is None):
                d.callback(reader.take(n))
            elif self.error is not None:
                d.errback(Failure(errors.TFTPError()))
            else:
                self.pending.append((reader, n, d))

    def reader(self) -> "_FillReader":
        return _FillReader(self)

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@implementer(IReader)
class _FillReader:
    """Follows a flight's temporary file, waiting when it reaches the end of
    what has been written so far."""

    __slots__ = ("size", "offset", "closed", "_flight")

    def __init__(self, flight: _Flight) -> None:
        self.size = flight.size
        self.offset = 0
        self.closed = False
        self._flight = flight
        flight.refs += 1

    def read(self, n: int) -> Any:
        f = self._flight
        if self.offset + n <= f.written or (f.done and f.error is None):
            return self.take(n)
        if f.error is not None:
            raise errors.TFTPError()
        d: Deferred = Deferred()
        f.pending.append((self, n, d))
        return d

    def take(self, n: int) -> bytes:
        data = os.pread(self._flight.fd, n, self.offset)
        self.offset += len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._flight.release()


@implementer(IBackend)
class CacheBackend:
    """Serves ``origin``'s files through a cache in ``directory``.

    ``max_size`` bounds the bytes kept (entries being read may hold it over
    until they are released); ``revalidate`` is how many seconds an entry is
    served before it is checked with the origin again.  ``clock`` defaults to
    ``reactor.seconds``.
    """

    def __init__(self, origin: Any, directory: str, reactor: Any, max_size: int = 1 << 30,
                 revalidate: float = 60.0, clock: Optional[Callable[[], float]] = None) -> None:
        self.origin = origin
        self.directory = os.path.realpath(directory)
        self.max_size = max_size
        self.revalidate = revalidate
        self._reactor = reactor
        self._clock = clock or reactor.seconds
        self._tmp = os.path.join(self.directory, "tmp")
        self._entries: "OrderedDict[str, _Entry]" = OrderedDict()
        self._flights: Dict[str, _Flight] = {}
        self._committing: Set[str] = set()
        self._idle: List[Deferred] = []
        self.used = 0
        self._load()
        self._files = FilesystemBackend(self.directory)

    # -- start-up ---------------------------------------------------------------
    def _load(self) -> None:
        os.makedirs(self._tmp, exist_ok=True)
        for name in os.listdir(self._tmp):
            os.unlink(os.path.join(self._tmp, name))
        names = os.listdir(self.directory)
        found: List[Tuple[float, _Entry]] = []
        for name in names:
            if not name.endswith(".json"):
                continue
            path = os.path.join(self.directory, name)
            try:
                with open(path, encoding="utf-8") as f:
                    entry = _Entry.from_meta(json.load(f))
                if name != entry.name + ".json":
                    raise ValueError("metadata does not match its name")
                st = os.stat(os.path.join(self.directory, entry.data))
                if st.st_size != entry.size:
                    raise ValueError("%d bytes on disk, %d expected" % (st.st_size, entry.size))
            except (OSError, ValueError, KeyError, TypeError) as e:
                log.warn("cache: dropping {name}: {err}", name=name, err=e)
                self._unlink(name)
                continue
            found.append((st.st_atime, entry))
        found.sort(key=lambda item: item[0])
        for _, entry in found:
            self._entries[entry.name] = entry
            self.used += entry.size
        referenced = {e.data for e in self._entries.values()}
        for name in names:
            if name.endswith(".data") and name not in referenced:
                os.unlink(os.path.join(self.directory, name))
        self._evict()
        log.info("cache {dir}: {n} entries, {used} bytes", dir=self.directory,
                 n=len(self._entries), used=self.used)

    # -- IBackend -----------------------------------------------------------------
    def get_reader(self, path: str, request: TransferRequest) -> Any:
        return self._serve(path, self.origin.key(path), retry=True)

    def get_writer(self, path: str, request: TransferRequest) -> Any:
        raise errors.AccessViolation()

    def _serve(self, path: str, key: str, retry: bool) -> Any:
        name = _name(key)
        flight = self._flights.get(name)
        if flight is not None and flight.filling:
            return flight.reader()
        if flight is None:
            entry = self._entries.get(name)
            if entry is not None and self._clock() - entry.validated < self.revalidate:
                return self._open(entry, path, retry)
            flight = self._flights[name] = _Flight(self, path, key, entry)
            d = flight.wait().addCallback(self._landed, path, retry)
            flight.start()
            return d
        return flight.wait().addCallback(self._landed, path, retry)

    def _landed(self, outcome: Any, path: str, retry: bool) -> Any:
        if isinstance(outcome, _Flight):
            if outcome.error is not None:
                raise errors.TFTPError()
            return outcome.reader()
        return self._open(outcome, path, retry)

    def _open(self, entry: _Entry, path: str, retry: bool) -> Any:
        if not entry.verified:
            return self._verify(entry).addCallback(
                lambda ok: self._open(entry, path, retry) if ok else self._serve(path, entry.key, retry))
        try:
            reader = self._files.get_reader(entry.data, None)
        except errors.TFTPError:
            reader = None
        if reader is None or reader.size != entry.size:
            log.warn("cache: {key!r} is damaged on disk; fetching it again", key=entry.key)
            if reader is not None:
                reader.close()
            self._remove(entry)
            if not retry:
                raise errors.TFTPError()
            return self._serve(path, entry.key, retry=False)
        self._entries.move_to_end(entry.name)
        self._touch(entry)
        return _EntryReader(reader, entry)

    def _touch(self, entry: _Entry) -> None:
        """Record the use in the body's access time: the LRU order start-up
        restores (set explicitly, whatever the mount's atime policy)."""
        path = os.path.join(self.directory, entry.data)
        try:
            os.utime(path, ns=(time.time_ns(), os.stat(path).st_mtime_ns))
        except OSError:
            pass

    def _verify(self, entry: _Entry) -> Deferred:
        """Fires True if the body still has its SHA-256 (checked once per run)."""
        d: Deferred = Deferred()
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

        def done(ok: Any) -> None:
            ok = ok is True
            waiters, entry.checking = entry.checking or [], None
            if ok:
                entry.verified = True
            elif self._entries.get(entry.name) is entry:
                log.warn("cache: {key!r} fails its checksum; fetching it again", key=entry.key)
                self._remove(entry)
            for w in waiters:
                w.callback(ok)

        deferToThreadPool(self._reactor, self._reactor.getThreadPool(), check).addBoth(done)
        return d

    # -- bookkeeping ----------------------------------------------------------------
    def _land(self, flight: _Flight) -> None:
        if self._flights.get(flight.name) is flight:
            del self._flights[flight.name]
        if not self._flights:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def idle(self) -> Deferred:
        """Fires once no fetch or store is in progress (for a clean stop)."""
        if not self._flights:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle.append(d)
        return d

    def _revalidated(self, entry: _Entry, response: OriginResponse) -> None:
        entry.validated = self._clock()
        if response.etag is not None:
            entry.etag = response.etag
        if response.last_modified is not None:
            entry.last_modified = response.last_modified
        if self._entries.get(entry.name) is entry:
            try:
                self._write_meta(entry, durable=False)
            except OSError as e:
                log.warn("cache: cannot update {key!r}: {err}", key=entry.key, err=e)

    def _commit(self, flight: _Flight, response: OriginResponse, sha256: str) -> Deferred:
        """Store a complete body and index it.  The syncing is done in a
        thread: an fsync of a large file would stall every session."""
        data = "%s.%s.data" % (flight.name, secrets.token_hex(6))
        entry = _Entry(flight.key, data, flight.written, sha256, response.etag, response.last_modified,
                       self._clock(), True)
        fd, tmp, final = flight.fd, flight.tmp, os.path.join(self.directory, data)
        self._committing.add(entry.name)

        def store() -> None:
            os.fsync(fd)
            os.rename(tmp, final)
            try:
                self._write_meta(entry, durable=True)
            except OSError:
                os.unlink(final)
                raise

        def stored(_: Any) -> None:
            flight.tmp = None
            old = self._entries.pop(entry.name, None)
            if old is not None:
                self.used -= old.size
                self._unlink(old.data)
            self._entries[entry.name] = entry
            self.used += entry.size
            self._evict()

        def failed(failure: Failure) -> None:
            log.warn("cache: cannot store {key!r}: {err}", key=flight.key, err=failure.getErrorMessage())

        def finished(result: Any) -> Any:
            self._committing.discard(entry.name)
            return result

        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), store)
        return d.addBoth(finished).addCallbacks(stored, failed)

    def _write_meta(self, entry: _Entry, durable: bool) -> None:
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
                self._remove(entry)

    def _remove(self, entry: _Entry) -> None:
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

    def keys(self) -> List[str]:
        """The cached keys, least recently used first."""
        return [e.key for e in self._entries.values()]
