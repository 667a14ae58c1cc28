"""One fetch from the origin, shared by every request that arrives while it runs.

Until the origin answers, requests wait on the flight; once a body arrives
it is written to a temporary file, and each request gets a
:class:`FillReader` that follows the file as it grows, waiting only when it
catches up with the origin.  When the body is complete, matches its
announced length and fits the cache, the store makes it an entry.
"""
from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Union

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from zope.interface import implementer

from txfbtftp._backends.http.iorigin import IBody, OriginResponse
from txfbtftp._backends.http.store import Entry, entry_name
from txfbtftp._interfaces import IReader, MaybeDeferred
from txfbtftp._observe.logs import log
from txfbtftp._protocol import errors

if TYPE_CHECKING:
    from txfbtftp._backends.http.cache import CacheBackend

_CHUNK = 256 * 1024

#: What a flight lands as: itself (a body to read along), or the entry a 304
#: (or an origin that is down) confirmed.
Landing = Union["Flight", Entry]


class Flight:
    """A fetch of ``key`` (for ``path``), revalidating ``entry`` if there is one."""

    def __init__(self, cache: CacheBackend, path: str, key: str, entry: Entry | None) -> None:
        self.cache = cache
        self.path = path
        self.key = key
        self.name = entry_name(key)
        self.entry = entry
        self.waiters: list[Deferred[Landing]] = []
        self.filling = False
        self.done = False
        self.error: errors.TFTPError | None = None
        self.size: int | None = None
        self.written = 0
        self.fd = -1
        self.tmp: str | None = None
        self.refs = 0
        self.pending: list[tuple[FillReader, int, Deferred[bytes]]] = []
        self._hash = hashlib.sha256()
        self._response: OriginResponse | None = None
        self._body: IBody | None = None

    def wait(self) -> Deferred[Landing]:
        d: Deferred[Landing] = Deferred()
        self.waiters.append(d)
        return d

    def _resolve(self, outcome: Landing) -> None:
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
        origin = self.cache.origin
        if entry is None:
            d = maybeDeferred(origin.fetch, self.path)
        else:
            d = maybeDeferred(origin.fetch, self.path, entry.etag, entry.last_modified)
        d.addCallbacks(self._answered, self._refused)
        d.addErrback(self._crashed)

    def _answered(self, response: OriginResponse) -> None:
        if response.status == 304 and self.entry is not None:
            self.cache.land(self)
            self.cache.store.revalidated(self.entry, response.etag, response.last_modified)
            self._resolve(self.entry)
            return
        self._response = response
        self._body = response.body
        self.size = response.size
        self.fd, self.tmp = self.cache.store.temporary(self.name[:16])
        self.refs = 1
        self.filling = True
        self._resolve(self)
        self._pull()

    def _refused(self, failure: Failure) -> None:
        self.cache.land(self)
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
            self.cache.store.remove(entry)
        self._reject(error)

    def _crashed(self, failure: Failure) -> None:
        log.failure("cache flight for {key!r} crashed", failure, key=self.key)
        if self.filling:
            self._fail(errors.TFTPError())
            return
        self.cache.land(self)
        if self._body is not None:
            self._body.close()
        self._reject(errors.TFTPError())

    # -- copying the body -------------------------------------------------------
    def _pull(self) -> None:
        body = self._body
        while not self.done and body is not None:
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
        store = self.cache.store
        if self._body is None or not self._body.complete or response is None or self.tmp is None:
            log.info("{key!r}: body of unknown length ended by a close; served, not cached", key=self.key)
        elif self.written > store.max_size:
            log.info("{key!r}: {n} bytes is more than the whole cache; served, not cached",
                     key=self.key, n=self.written)
        else:
            # Latecomers keep joining this flight (reading the finished file)
            # until the entry is in the index.
            store.commit(self.key, self.fd, self.tmp, self.written, self._hash.hexdigest(), response.etag,
                         response.last_modified).addCallback(self._committed)
            return
        self._committed(False)

    def _committed(self, stored: bool) -> None:
        if stored:
            self.tmp = None  # renamed into place
        self._discard()
        self.cache.land(self)
        self.release()

    def _fail(self, error: errors.TFTPError) -> None:
        if self.done:
            return
        self.done = True
        self.error = error
        self.cache.land(self)
        if self._body is not None:
            self._body.close()
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

    def reader(self) -> FillReader:
        return FillReader(self)

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@implementer(IReader)
class FillReader:
    """Follows a flight's temporary file, waiting when it reaches the end of
    what has been written so far."""

    __slots__ = ("size", "offset", "closed", "_flight")

    def __init__(self, flight: Flight) -> None:
        self.size = flight.size
        self.offset = 0
        self.closed = False
        self._flight = flight
        flight.refs += 1

    def read(self, n: int) -> MaybeDeferred[bytes]:
        f = self._flight
        if self.offset + n <= f.written or (f.done and f.error is None):
            return self.take(n)
        if f.error is not None:
            raise errors.TFTPError()
        d: Deferred[bytes] = Deferred()
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
