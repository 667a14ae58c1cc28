"""A fill this process makes: the origin's body copied into the fill's temporary file.

Room is set aside before anything is written (:meth:`CacheStore.reserve
<txfbtftp._backends.http.store.CacheStore.reserve>`, which evicts first):
the whole ``Content-Length`` at once, or, without one, what is free up to
a first step, then more as the body grows (twice as much each time,
evicting only for the bytes that have arrived: a five-byte script costs
the cache nothing).  A body larger than the cache, or for which no room
can be made, is not written at all: the requests waiting for it stream it
from the origin.  A write that fails midway (the disk filled up after all, an
I/O error) abandons the fill: its readers go on from the origin.  A body
that ends short of its length fails, as it would have without a cache.  A
complete body is committed; the flight lands once it is in the index.

A fill taken over from a process that died goes on from the bytes already
in the file, with a Range request (none if the file already holds its whole
``Content-Length``); its SHA-256 is then computed from the file when it is
committed.  Without an ETag or Last-Modified to ask it with, the bytes are
dropped and the file streamed whole: nothing would say they are still the
origin's.
"""
from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from txfbtftp._backends.http.iorigin import IBody, OriginResponse, resumable
from txfbtftp._backends.http.store import Claim
from txfbtftp._observe.logs import log
from txfbtftp._protocol import errors

if TYPE_CHECKING:
    from txfbtftp._backends.http.flight import Flight

_CHUNK = 256 * 1024
#: Without a Content-Length, room is set aside up to this much at first,
#: then twice as much each time the body outgrows it.
_STEP = 256 * 1024


class Fetch:
    """Fills ``flight``'s claim from the origin."""

    def __init__(self, flight: Flight, claim: Claim) -> None:
        self.flight = flight
        self.store = flight.cache.store
        self.fd = claim.fd
        self.part = claim.part
        self.record = claim.fill
        answered = claim.fill.answered
        self.written = os.fstat(claim.fd).st_size if answered else 0
        self.reserved = (claim.fill.size or 0) if answered else 0
        self.length, self.etag, self.last_modified = claim.fill.length, claim.fill.etag, claim.fill.last_modified
        self.done = False
        self._hash = hashlib.sha256() if self.written == 0 else None
        self._body: IBody | None = None

    def start(self) -> None:
        f, rec = self.flight, self.record
        origin = f.cache.origin
        if rec.answered and self.written:  # taken over from a filler that died
            if self.written == rec.length:
                self._read_along()  # it wrote it all: nothing to ask the origin
                self._finish()
                return
            if not resumable(rec.etag, rec.last_modified):
                # Nothing says the origin's file is still the one it began: its bytes go.
                self._end()
                self._release()
                f.direct(None, f.source(rec.length, None, None), "no validator to go on with")
                return
            d = maybeDeferred(origin.fetch_range, f.path, self.written, rec.length, rec.etag, rec.last_modified)
        elif f.stale is not None:
            d = maybeDeferred(origin.fetch, f.path, f.stale.etag, f.stale.last_modified)
        else:
            d = maybeDeferred(origin.fetch, f.path)
        d.addCallbacks(self._answered, self._refused).addErrback(self._crashed)

    def poke(self) -> None:
        pass

    def stop(self) -> None:
        pass  # a fetch finishes: the cache waits for it

    # -- the origin's answer --------------------------------------------------------------
    def _answered(self, response: OriginResponse) -> None:
        f = self.flight
        if response.status == 304 and f.stale is not None:
            self.done = True
            entry = self.store.give_up(f.name, self.part, {"etag": response.etag,
                                                           "last_modified": response.last_modified})
            self._release()
            if entry is None:
                f.retry()
            else:
                f.serve_entry(entry)
            return
        self._body = response.body
        if not self.written:
            self.length, self.etag, self.last_modified = response.size, response.etag, response.last_modified
            if not self._reserve(response):
                return
            f.cache.count("cache_fills")
        self._read_along()
        if self._body is None:  # 416: the dead filler had written it all
            self._finish()
            return
        self._pull()

    def _read_along(self) -> None:
        """Let the flight's readers follow the file as it is written."""
        f, fill = self.flight, self.flight.fill
        if fill is None:
            source = f.source(self.length, self.etag, self.last_modified)
            f.read_along(f.new_fill(self.fd, source, self.written))
        else:  # taken over from a watch: its readers read on
            fill.on_wait = fill.on_unread = None

    def _reserve(self, response: OriginResponse) -> bool:
        """Room for the body: its length, or what is free (up to a step) for
        one of unknown length, which evicts only once bytes arrive."""
        store, f = self.store, self.flight
        if response.size is not None and response.size > store.max_size:
            why = "larger than the cache"
        else:
            size, least = (response.size, None) if response.size is not None else (_STEP, 0)
            try:
                granted = store.reserve(f.name, self.part, size, response.size, response.etag,
                                        response.last_modified, least)
                if granted is not None:
                    self.reserved = granted
                    return True
            except OSError as e:
                log.warn("cache: cannot update the index: {err}", err=e)
            why = "no room in the cache"
        self.done = True
        store.give_up(f.name, self.part)
        self._release()
        f.direct(response.body, f.source(response.size, response.etag, response.last_modified), why)
        return False

    def _refused(self, failure: Failure) -> None:
        f = self.flight
        error = failure.value if isinstance(failure.value, errors.TFTPError) else None
        if error is None:
            log.failure("fetching {key!r} failed", failure, key=f.key)
            error = errors.TFTPError()
        self.done = True
        self.store.give_up(f.name, self.part)
        if f.fill is not None:  # taken over midway, and the rest is not to be had
            f.fill.fail()
            self._release()
            f.land()
            return
        self._release()
        stale = f.stale
        if stale is not None and type(error) is errors.TFTPError:
            log.warn("{key!r}: origin unavailable, serving the cached copy", key=f.key)
            f.serve_entry(stale)
            return
        if stale is not None:
            try:
                self.store.remove(stale)
            except OSError as e:
                log.warn("cache: cannot drop {key!r}: {err}", key=f.key, err=e)
        f.refuse(error)

    def _crashed(self, failure: Failure) -> None:
        log.failure("cache fill for {key!r} crashed", failure, key=self.flight.key)
        if not self.done:
            self._fail()

    # -- copying the body -------------------------------------------------------------------
    def _pull(self) -> None:
        body = self._body
        while not self.done and body is not None:
            try:
                data = body.readsome(_CHUNK)
            except errors.TFTPError:
                self._fail()
                return
            if isinstance(data, Deferred):
                data.addCallbacks(self._arrived, lambda _: self._fail())
                data.addErrback(self._crashed)
                return
            self._store(data)

    def _arrived(self, data: bytes) -> None:
        self._store(data)
        self._pull()

    def _store(self, data: bytes) -> None:
        if self.done:
            return
        if not data:
            self._finish()
            return
        end = self.written + len(data)
        if end > self.reserved and not self._grow(end):
            return
        try:
            view = memoryview(data)
            offset = self.written
            while view:
                n = os.pwrite(self.fd, view, offset)
                offset += n
                view = view[n:]
        except OSError as e:
            self._abandon("cannot write it (%s)" % (e.strerror or e))
            return
        if self._hash is not None:
            self._hash.update(data)
        self.written = end
        assert self.flight.fill is not None
        self.flight.fill.grew(end)

    def _grow(self, end: int) -> bool:
        """More room for a body of unknown length."""
        max_size = self.store.max_size
        if end > max_size:
            self._abandon("larger than the cache")
            return False
        want = min(max(end, 2 * self.reserved, _STEP), max_size)
        try:
            granted = self.store.reserve(self.flight.name, self.part, want, self.length, self.etag,
                                         self.last_modified, end)
        except OSError:
            granted = None
        if granted is None:
            self._abandon("no room in the cache")
            return False
        self.reserved = granted
        return True

    def _finish(self) -> None:
        f = self.flight
        if self.length is not None and self.written != self.length:
            log.warn("{key!r}: got {n} of {size} bytes", key=f.key, n=self.written, size=self.length)
            self._fail()
            return
        self.done = True
        assert f.fill is not None
        f.fill.complete()
        whole = self._body.complete if self._body is not None else self.length is not None
        if not whole:
            log.info("{key!r}: body of unknown length ended by a close; served, not cached", key=f.key)
            self.store.give_up(f.name, self.part)
            self._committed(False)
            return
        self.store.commit(f.key, f.name, self.fd, self.part, self.written,
                          self._hash.hexdigest() if self._hash is not None else None,
                          self.etag, self.last_modified).addCallback(self._committed)

    def _committed(self, stored: bool) -> None:
        self._release()
        self.flight.land()

    # -- giving up ----------------------------------------------------------------------------
    def _abandon(self, why: str) -> None:
        """The cache cannot keep it: readers go on from the origin."""
        self._end()
        self.flight.orphan(why)
        self._release()
        self.flight.land()

    def _fail(self) -> None:
        """The origin broke off: as without a cache, readers past what arrived fail."""
        self._end()
        f = self.flight
        if f.fill is not None:
            f.fill.fail()
            self._release()
            f.land()
        else:
            self._release()
            f.refuse(errors.TFTPError())

    def _end(self) -> None:
        self.done = True
        if self._body is not None:
            self._body.close()
        self.store.give_up(self.flight.name, self.part)

    def _release(self) -> None:
        fill = self.flight.fill
        if fill is not None and fill.fd == self.fd:
            fill.release()
        elif self.fd >= 0:
            os.close(self.fd)
        self.fd = -1
