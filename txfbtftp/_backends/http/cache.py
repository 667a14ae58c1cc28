"""A local disk cache in front of a slow origin (an :class:`~txfbtftp._backends.http.iorigin.IOrigin`).

A hit is served from disk like the filesystem backend serves it.  A miss
fetches once however many clients ask at the same moment: the first request
starts a :class:`~txfbtftp._backends.http.flight.Flight`, everyone else joins
it, and all of them read the body while it is being written.  After
``revalidate`` seconds an entry is checked with the origin
(If-None-Match / If-Modified-Since): 304 keeps it, a new body replaces it,
and an origin that is down leaves it served as it is.  The directory, its
index and eviction are the :class:`~txfbtftp._backends.http.store.CacheStore`'s.
"""
from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from txfbtftp._backends.http.flight import Flight, Landing
from txfbtftp._backends.http.iorigin import IOrigin
from txfbtftp._backends.http.store import CacheStore, Entry, entry_name
from txfbtftp._interfaces import IBackend, ILifecycle, IReader, MaybeDeferred, TransferRequest, Unwritable
from txfbtftp._lifecycle import start_all, stop_all
from txfbtftp._protocol import errors
from txfbtftp._types import IHTTPReactor


@implementer(IBackend, ILifecycle)
class CacheBackend:
    """Serves ``origin``'s files through a cache in ``directory``.

    ``max_size`` bounds the bytes kept (entries being read may hold it over
    until they are released); ``revalidate`` is how many seconds an entry is
    served before it is checked with the origin again.  ``clock`` defaults to
    ``reactor.seconds``.  :meth:`start` creates the directory and loads the
    index; :meth:`stop` waits for fetches in progress and closes the origin.
    """

    def __init__(self, origin: IOrigin, directory: str, reactor: IHTTPReactor, max_size: int = 1 << 30,
                 revalidate: float = 60.0, clock: Callable[[], float] | None = None) -> None:
        self.origin = origin
        self.revalidate = revalidate
        self._clock = clock or reactor.seconds
        self.store = CacheStore(directory, reactor, max_size, self._clock)
        self._flights: dict[str, Flight] = {}
        self._idle: list[Deferred[None]] = []

    @property
    def directory(self) -> str:
        return self.store.directory

    def start(self) -> None:
        start_all([self.origin])
        try:
            self.store.load()
        except OSError as e:
            raise Unwritable("cannot use the cache directory %s: %s" % (self.store.directory, e.strerror)) from None

    def stop(self) -> Deferred[None]:
        return self.idle().addCallback(lambda _: stop_all([self.origin]))

    def get_reader(self, path: str, request: TransferRequest) -> MaybeDeferred[IReader]:
        return self._serve(path, self.origin.key(path), retry=True)

    def keys(self) -> list[str]:
        """The cached keys, least recently used first."""
        return self.store.keys()

    def _serve(self, path: str, key: str, retry: bool) -> MaybeDeferred[IReader]:
        name = entry_name(key)
        flight = self._flights.get(name)
        if flight is not None and flight.filling:
            return flight.reader()
        if flight is None:
            entry = self.store.get(name)
            if entry is not None and self._clock() - entry.validated < self.revalidate:
                return self._open(entry, path, retry)
            flight = self._flights[name] = Flight(self, path, key, entry)
            d = self._await(flight, path, retry)
            flight.start()
            return d
        return self._await(flight, path, retry)

    def _await(self, flight: Flight, path: str, retry: bool) -> Deferred[IReader]:
        d: Deferred[IReader] = flight.wait().addCallback(self._landed, path, retry)
        return d

    def _landed(self, outcome: Landing, path: str, retry: bool) -> MaybeDeferred[IReader]:
        if isinstance(outcome, Flight):
            if outcome.error is not None:
                raise errors.TFTPError()
            return outcome.reader()
        return self._open(outcome, path, retry)

    def _open(self, entry: Entry, path: str, retry: bool) -> MaybeDeferred[IReader]:
        if not entry.verified:
            return self.store.verify(entry).addCallback(
                lambda ok: self._open(entry, path, retry) if ok else self._serve(path, entry.key, retry))
        reader = self.store.open(entry)
        if reader is not None:
            return reader
        if not retry:
            raise errors.TFTPError()
        return self._serve(path, entry.key, retry=False)

    def land(self, flight: Flight) -> None:
        """``flight`` needs no more joiners: the next request starts afresh."""
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
