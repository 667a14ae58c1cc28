"""Following a fill another process makes, and taking it over if that process dies.

The other process writes the fill's temporary file; this one reads it
through a descriptor of its own.  While a request waits (for the origin's
answer, or for bytes past what is written so far) the file is polled every
few milliseconds: ``fstat`` says whether it has grown; when it has not, the
index says whether the fill was answered, committed or given up, and the
file's lock whether its filler lives (a live filler holds it from claim to
commit).  A process that can take that lock without waiting has found the
filler gone, and, once the index confirms the fill is still there, takes it
over: it fetches the rest with a Range request, from the bytes already in
the file, and its readers (and those of every other process following)
read on.  Polling, not inotify: it costs one ``fstat`` per fill and tick,
only while someone waits, and the same loop notices a dead filler, which
no file event would announce.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall

from txfbtftp._backends.http.fetch import Fetch
from txfbtftp._backends.http.index import Entry, Fill
from txfbtftp._backends.http.locks import share, try_lock
from txfbtftp._backends.http.store import Claim
from txfbtftp._observe.logs import log
from txfbtftp._protocol import errors

if TYPE_CHECKING:
    from txfbtftp._backends.http.flight import Flight

#: Seconds between two looks at a fill someone waits for.
POLL = 0.005


class Watch:
    """Follows the fill ``claim`` names, another process's, for ``flight``."""

    def __init__(self, flight: Flight, claim: Claim) -> None:
        self.flight = flight
        self.store = flight.cache.store
        self.fd = claim.fd
        self.part = claim.part
        self.done = False
        self._record = claim.fill
        self._timer: IDelayedCall | None = None

    def start(self) -> None:
        if self._record.answered:
            self._answered(self._record)
        self.poke()

    def poke(self) -> None:
        if not self.done and (self._timer is None or not self._timer.active()):
            self._timer = self.flight.cache.reactor.callLater(POLL, self._tick)

    def stop(self) -> None:
        if self.done:
            return
        f = self.flight
        if f.fill is not None:
            f.fill.abandon("the server is stopping")
        self._end()
        f.refuse(errors.TFTPError())

    def _answered(self, record: Fill) -> None:
        f = self.flight
        fill = f.new_fill(self.fd, f.source(record.length, record.etag, record.last_modified),
                          os.fstat(self.fd).st_size)
        fill.on_wait = self.poke
        fill.on_unread = self._unread
        f.read_along(fill)

    def _unread(self) -> None:
        if not self.done and not self.flight.waiting:
            self._end()  # nobody reads along: the next request looks again

    def _tick(self) -> None:
        self._timer = None
        if self.done:
            return
        f = self.flight
        fill = f.fill
        grew = False
        if fill is not None:
            size = os.fstat(self.fd).st_size
            if size > fill.written:
                fill.grew(size)
                grew = True
            if fill.size is not None and fill.written >= fill.size:
                fill.complete()
                self._end()
                return
            if not (fill.waiting or f.waiting):
                return  # polled again when a reader waits
        if not grew:
            fate = self.store.follow(f.name, self.fd, self.part)
            if isinstance(fate, Fill) and try_lock(self.fd):
                fate = self.store.take_over(f.name, self.fd, self.part)
                if isinstance(fate, Fill):
                    self._take_over(fate)
                    return
            if not self._settle(fate):
                return
        self.poke()

    def _settle(self, fate: Fill | Entry | None) -> bool:
        """Act on what the index says; whether to go on watching."""
        f = self.flight
        if isinstance(fate, Fill):
            if fate.answered and f.fill is None:
                self._answered(fate)
            return True
        if isinstance(fate, Entry):  # committed: the file we read is the entry
            share(self.fd)
            if f.fill is None:
                f.read_along(f.new_fill(self.fd, f.source(fate.size, fate.etag, fate.last_modified), fate.size))
            assert f.fill is not None
            f.fill.written = fate.size
            f.fill.complete()
            self._end()
            return False
        if f.fill is not None:
            f.fill.abandon("the process filling it gave up")
        self._end()
        f.retry()
        return False

    def _take_over(self, record: Fill) -> None:
        self.done = True
        log.info("cache: {key!r}: the process fetching it is gone; going on from byte {n}",
                 key=self.flight.key, n=os.fstat(self.fd).st_size)
        f = self.flight
        f.drive(Fetch(f, Claim(self.fd, self.part, record, True)))

    def _end(self) -> None:
        self.done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        fill = self.flight.fill
        if fill is not None and fill.fd == self.fd:
            fill.on_wait = fill.on_unread = None
            fill.release()
        else:
            os.close(self.fd)
        self.flight.land()
