"""A local disk cache in front of a slow origin (an :class:`~txfbtftp._backends.http.iorigin.IOrigin`).

One cache per directory, however many processes serve from it (the
workers of ``--workers``, or a second server pointed at it): the directory
and its index are the truth they share (:mod:`~txfbtftp._backends.http.store`).
A hit is served from disk like the filesystem backend serves it: one
shared descriptor, ``pread``.  A miss is fetched from the origin once per
machine: the first request claims the fill, and every other request, in
this process or another, reads the body while it is being written
(:mod:`~txfbtftp._backends.http.flight`).  After ``revalidate`` seconds an
entry is checked with the origin (If-None-Match / If-Modified-Since): 304
keeps it, a new body replaces it, and an origin that is down leaves it
served as it is.

The cache never fails a client while the origin answers: a file that does
not fit (larger than the cache, no room on the disk) or whose writing fails
is streamed from the origin instead, and such downloads are counted in the
server's statistics (``cache_uncached``, with ``cache_hits`` and
``cache_fills``) and logged at most once a minute per reason.
"""
from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from txfbtftp._backends.http.detour import Detour, Source
from txfbtftp._backends.http.flight import Flight
from txfbtftp._backends.http.index import Entry, entry_name
from txfbtftp._backends.http.iorigin import IOrigin
from txfbtftp._backends.http.store import CacheStore
from txfbtftp._interfaces import (IBackend, ICounting, ILifecycle, IReader, MaybeDeferred, TransferRequest,
                                  Unwritable)
from txfbtftp._lifecycle import start_all, stop_all
from txfbtftp._observe.logs import LogLimiter, log
from txfbtftp._protocol import errors
from txfbtftp._types import IHTTPReactor


@implementer(IBackend, ILifecycle, ICounting)
class CacheBackend:
    """Serves ``origin``'s files through a cache in ``directory``.

    ``max_size`` bounds the bytes kept in the directory, by all the processes
    that use it (bodies being read may hold it over until they are
    released); ``revalidate`` is how many seconds an entry is served before
    it is checked with the origin again.  ``clock`` defaults to
    ``reactor.seconds``.  :meth:`start` creates the directory and loads the
    index; :meth:`stop` waits for fetches in progress and closes the origin.
    """

    def __init__(self, origin: IOrigin, directory: str, reactor: IHTTPReactor, max_size: int = 1 << 30,
                 revalidate: float = 60.0, clock: Callable[[], float] | None = None) -> None:
        self.origin = origin
        self.reactor = reactor
        self.revalidate = revalidate
        self._clock = clock or reactor.seconds
        self.store = CacheStore(directory, reactor, max_size, self._clock)
        self._flights: dict[str, Flight] = {}
        self._idle: list[Deferred[None]] = []
        self._increment: Callable[[str, int], None] = lambda name, n: None
        self._quiet = LogLimiter(reactor.seconds)

    @property
    def directory(self) -> str:
        return self.store.directory

    def count_with(self, increment: Callable[[str, int], None]) -> None:
        self._increment = increment

    def start(self) -> None:
        start_all([self.origin])
        try:
            self.store.load()
        except OSError as e:
            raise Unwritable("cannot use the cache directory %s: %s" % (self.store.directory, e.strerror)) from None

    def stop(self) -> Deferred[None]:
        for flight in list(self._flights.values()):
            flight.stop()
        return (self.idle().addCallback(lambda _: stop_all([self.origin]))
                .addCallback(lambda _: self.store.close()))

    def get_reader(self, path: str, request: TransferRequest) -> MaybeDeferred[IReader]:
        return self.serve(path, self.origin.key(path), retry=True)

    def keys(self) -> list[str]:
        """The cached keys, least recently used first."""
        return self.store.keys()

    def fresh(self, entry: Entry) -> bool:
        return self._clock() - entry.validated < self.revalidate

    def serve(self, path: str, key: str, retry: bool) -> MaybeDeferred[IReader]:
        """A reader of ``path``: a hit, a flight joined, or a new flight."""
        name = entry_name(key)
        flight = self._flights.get(name)
        if flight is not None:
            return flight.join(retry)
        entry = self.store.get(name)
        if entry is not None and self.fresh(entry):
            reader = self.store.open(entry)
            if reader is not None:
                self.count("cache_hits")
                return reader
        try:
            claim = self.store.claim(key, name, self.fresh)
        except OSError as e:
            return self.uncached_reader(path, key, "cannot use the cache directory (%s)" % (e.strerror or e))
        if isinstance(claim, Entry):
            return self.open_entry(claim, path, retry)
        flight = self._flights[name] = Flight(self, path, key, name, entry)
        d = flight.join(retry)
        flight.start(claim)
        return d

    def open_entry(self, entry: Entry, path: str, retry: bool) -> MaybeDeferred[IReader]:
        reader = self.store.open(entry)
        if reader is not None:
            self.count("cache_hits")
            return reader
        if not retry:
            raise errors.TFTPError()
        return self.serve(path, entry.key, retry=False)

    def uncached_reader(self, path: str, key: str, why: str) -> IReader:
        """``path`` straight from the origin."""
        self.not_cached(key, why)
        return Detour(Source(self.origin, path, None, None, None), 0)

    # -- statistics -----------------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        self._increment(name, n)

    def not_cached(self, key: str, why: str) -> None:
        """A download served from the origin, not from the cache: counted, and
        logged at most once a minute per reason."""
        self.count("cache_uncached")
        if self._quiet.allow(why):
            more = self._quiet.suppressed.pop(why, 0)
            log.warn("cache: {key!r} served from the origin, not cached: {why}{more}", key=key, why=why,
                     more=" (%d more downloads since the last such line)" % more if more else "")

    # -- flights ------------------------------------------------------------------------------
    def landed(self, flight: Flight) -> None:
        """``flight`` takes no more joiners."""
        if self._flights.get(flight.name) is flight:
            del self._flights[flight.name]
        if not self._flights:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def idle(self) -> Deferred[None]:
        """Fires once no fetch or store is in progress (for a clean stop)."""
        if not self._flights:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idle.append(d)
        return d
