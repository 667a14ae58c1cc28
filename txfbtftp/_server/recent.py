"""Clients whose session just ended, remembered for as long as they may still
be retransmitting (the watchdog's patience).

In a storm a request can wait seconds in the listening socket's queue; a
copy of it read after its session has ended must not start the transfer
again (a second OACK to a port the client has closed, or to another
client's new socket).  A copy that arrived (by the kernel's timestamp)
before the session ended is such a stale copy and is dropped; a request sent
after the end is a client starting over and is served.  In ``--single-port``
mode every packet reaches the listening port, so a late ACK or a repeated
last DATA from a client that has just finished is dropped too, rather than
answered with ERROR 4.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from txfbtftp._interfaces import Address


class RecentlyEnded:
    """At most ``limit`` clients, each for ``ttl`` seconds."""

    def __init__(self, clock: Callable[[], float], ttl: float, limit: int = 16384) -> None:
        self._clock = clock
        self.ttl = ttl
        self.limit = limit
        #: key -> (forget at, hash of the session's request, ended at)
        self._ended: OrderedDict[Address, tuple[float, int, float]] = OrderedDict()

    def add(self, key: Address, request: bytes) -> None:
        ended = self._ended
        now = self._clock()
        ended.pop(key, None)
        ended[key] = (now + self.ttl, hash(request), now)
        while ended and (len(ended) > self.limit or next(iter(ended.values()))[0] <= now):
            ended.popitem(last=False)

    def _entry(self, key: Address) -> tuple[float, int, float] | None:
        entry = self._ended.get(key)
        if entry is not None and entry[0] <= self._clock():
            del self._ended[key]
            return None
        return entry

    def seen(self, key: Address) -> bool:
        """``key``'s session ended within the last ``ttl`` seconds."""
        return self._entry(key) is not None

    def stale(self, key: Address, request: bytes, arrived: float) -> bool:
        """``request`` is a copy of ``key``'s ended session's, received before it ended."""
        entry = self._entry(key)
        return entry is not None and entry[1] == hash(request) and arrived <= entry[2]
