"""Clients whose session just ended, for ``--single-port``.

There every packet reaches the listening port, so a late ACK or a repeated
last DATA from a client that has just finished would be "unexpected" and
answered with ERROR 4.  The server remembers ended sessions for as long as a
client may still be retransmitting (the watchdog's patience) and drops
their packets instead.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from txfbtftp._interfaces import Address


class RecentlyEnded:
    """At most ``limit`` clients, each for ``ttl`` seconds."""

    def __init__(self, clock: Callable[[], float], ttl: float, limit: int = 4096) -> None:
        self._clock = clock
        self.ttl = ttl
        self.limit = limit
        self._expiry: OrderedDict[Address, float] = OrderedDict()

    def add(self, key: Address) -> None:
        expiry = self._expiry
        now = self._clock()
        expiry.pop(key, None)
        expiry[key] = now + self.ttl
        while expiry and (len(expiry) > self.limit or next(iter(expiry.values())) <= now):
            expiry.popitem(last=False)

    def seen(self, key: Address) -> bool:
        """``key``'s session ended within the last ``ttl`` seconds."""
        expiry = self._expiry.get(key)
        if expiry is None:
            return False
        if expiry > self._clock():
            return True
        del self._expiry[key]
        return False
