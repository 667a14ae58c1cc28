"""The bodies' SHA-256, checked in the background after a cold start.

A restart must not make the first client of a large cached file wait while
the file is hashed, so entries are served as soon as their size and
modification time match what was recorded (which a write to the body, or a
body cut short, would change), and the process that starts alone on the
directory checks every body's SHA-256 afterwards: one at a time, most
recently used first, in a thread of the reactor's pool, reading a MiB at a
time and stopping between two when the cache stops.  A body that fails is
dropped (if the index still names it) and fetched again on its next
request; what was served from it before the check finished was served as
it was on disk.  Processes that join a running cache (workers, a restarted
worker) check nothing: the directory's first process did.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool

from txfbtftp._backends.http.index import Entry
from txfbtftp._observe.logs import log
from txfbtftp._types import IHTTPReactor

if TYPE_CHECKING:
    from txfbtftp._backends.http.store import CacheStore

_BLOCK = 1 << 20


def sha256_of(path: str, stopping: Callable[[], bool] = lambda: False) -> str:
    """The SHA-256 of the file at ``path`` (empty if ``stopping()`` turns true)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            if stopping():
                return ""
            h.update(block)
    return h.hexdigest()


class Verifier:
    """Checks a list of entries, one after the other."""

    def __init__(self, store: CacheStore, reactor: IHTTPReactor) -> None:
        self._store = store
        self._reactor = reactor
        self._queue: list[Entry] = []
        self._running: Deferred[None] | None = None
        self._stopping = False
        self._started = 0.0
        self._checked = 0
        self._damaged = 0

    @property
    def pending(self) -> int:
        """Entries not checked yet (the one being checked included)."""
        return len(self._queue) + (self._running is not None)

    def start(self, entries: list[Entry]) -> None:
        self._queue = list(entries)
        self._started = time.monotonic()
        self._next()

    def _next(self) -> None:
        self._running = None
        if self._stopping:
            return
        if not self._queue:
            if self._checked:
                log.info("cache: checked {n} bodies in {t:.1f}s, {bad} damaged", n=self._checked,
                         t=time.monotonic() - self._started, bad=self._damaged)
            return
        entry = self._queue.pop(0)
        path = self._store.path(entry.data)
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), sha256_of, path,
                              lambda: self._stopping)
        self._running = d.addCallbacks(self._done, lambda _: None, callbackArgs=(entry,))
        self._running.addBoth(lambda _: self._next())

    def _done(self, digest: str, entry: Entry) -> None:
        if not digest:
            return  # stopped midway
        self._checked += 1
        if digest != entry.sha256:
            self._damaged += 1
            log.warn("cache: {key!r} fails its checksum; fetching it again", key=entry.key)
            try:
                self._store.remove(entry)
            except OSError as e:
                log.warn("cache: cannot drop {key!r}: {err}", key=entry.key, err=e)

    def stop(self) -> Deferred[None]:
        """Stop checking; fires once the body being hashed, if any, is let go."""
        self._stopping = True
        self._queue = []
        running = self._running
        if running is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        running.addBoth(lambda _: d.callback(None))
        return d
