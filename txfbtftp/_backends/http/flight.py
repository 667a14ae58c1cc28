"""The requests of one process for one file while it is being fetched.

A miss claims the file's fill in the index (:meth:`CacheStore.claim
<txfbtftp._backends.http.store.CacheStore.claim>`).  If no process is
fetching it, this one does (:class:`~txfbtftp._backends.http.fetch.Fetch`);
if another one is, this one follows that process's temporary file
(:class:`~txfbtftp._backends.http.watch.Watch`), and takes the fill over
if that process dies.  Either way the requests of this process join one
:class:`Flight`: until the origin's answer is known they wait on it; then
each gets a reader of the fill, the entry a 304 confirmed, a stream of its
own from the origin (the file cannot be cached), or the origin's refusal.
So a miss is fetched from the origin once per machine, however many
processes serve the directory and however many clients ask.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from txfbtftp._backends.http.detour import Detour, Source
from txfbtftp._backends.http.fetch import Fetch
from txfbtftp._backends.http.fill import FillFile, State, answer
from txfbtftp._backends.http.index import Entry
from txfbtftp._backends.http.iorigin import IBody
from txfbtftp._backends.http.store import Claim
from txfbtftp._backends.http.watch import Watch
from txfbtftp._interfaces import IReader, MaybeDeferred
from txfbtftp._protocol import errors

if TYPE_CHECKING:
    from txfbtftp._backends.http.cache import CacheBackend


class Driver(Protocol):
    """What moves a flight on: a fetch of our own, or another process's, watched."""

    def start(self) -> None: ...

    def poke(self) -> None:
        """Someone is waiting for news."""

    def stop(self) -> None:
        """The cache is stopping: a fetch finishes, a watch ends."""


class Flight:
    """Requests for ``key`` (``path``, entry ``name``) joined while it is fetched;
    ``stale`` is the entry a conditional fetch revalidates, if any."""

    def __init__(self, cache: CacheBackend, path: str, key: str, name: str, stale: Entry | None) -> None:
        self.cache = cache
        self.path = path
        self.key = key
        self.name = name
        self.stale = stale
        self.fill: FillFile | None = None
        self.driver: Driver | None = None
        self.landed = False
        self._waiters: list[tuple[Deferred[IReader], bool]] = []

    @property
    def waiting(self) -> bool:
        return bool(self._waiters)

    def start(self, claim: Claim) -> None:
        self.drive(Fetch(self, claim) if claim.mine else Watch(self, claim))

    def drive(self, driver: Driver) -> None:
        self.driver = driver
        driver.start()

    def join(self, retry: bool = True) -> MaybeDeferred[IReader]:
        fill = self.fill
        if fill is not None and fill.state in (State.FILLING, State.COMPLETE):
            return fill.reader()
        d: Deferred[IReader] = Deferred()
        self._waiters.append((d, retry))
        if self.driver is not None:
            self.driver.poke()
        return d

    def source(self, size: int | None, etag: str | None, last_modified: str | None) -> Source:
        return Source(self.cache.origin, self.path, size, etag, last_modified)

    def new_fill(self, fd: int, source: Source, written: int) -> FillFile:
        """A fill file whose readers sent to the origin are counted and logged."""
        return FillFile(fd, source, written, on_detour=lambda why: self.cache.not_cached(self.key, why))

    # -- how it ends for the waiters -------------------------------------------------------
    def read_along(self, fill: FillFile) -> None:
        """The body is arriving in ``fill``: read it as it comes."""
        self.fill = fill
        self._settle(lambda retry: fill.reader())

    def serve_entry(self, entry: Entry) -> None:
        """The entry is current (304, an origin that is down, another process's fill)."""
        self.land()
        self._settle(lambda retry: self.cache.open_entry(entry, self.path, retry))

    def direct(self, body: IBody | None, source: Source, why: str) -> None:
        """The file cannot be cached: each waiter streams it from the origin (the
        first one the body already asked for)."""
        self.land()
        self.orphan(why)
        bodies = [body] if body is not None else []

        def stream(retry: bool) -> IReader:
            self.cache.not_cached(self.key, why)
            return bodies.pop() if bodies else Detour(source, 0)
        self._settle(stream)
        for left in bodies:
            left.close()

    def retry(self) -> None:
        """The other process's fill ended before an answer: ask again, once."""
        self.land()
        self._settle(lambda retry: self.cache.serve(self.path, self.key, False) if retry
                     else self.cache.uncached_reader(self.path, self.key, "the fill was given up"))

    def refuse(self, error: errors.TFTPError) -> None:
        self.land()
        waiters, self._waiters = self._waiters, []
        for d, _ in waiters:
            d.errback(Failure(error))

    def orphan(self, why: str) -> None:
        """The fill its readers follow will not be finished (the cache cannot
        keep it, or the flight ends without it): they go on from the origin,
        not wait for bytes that will never come."""
        if self.fill is not None:
            self.fill.abandon(why)

    def _settle(self, make: Callable[[bool], MaybeDeferred[IReader]]) -> None:
        waiters, self._waiters = self._waiters, []
        for d, retry in waiters:
            answer(d, make, retry)

    def land(self) -> None:
        """Take no more joiners: the next request starts afresh."""
        if not self.landed:
            self.landed = True
            self.cache.landed(self)

    def stop(self) -> None:
        if self.driver is not None:
            self.driver.stop()
