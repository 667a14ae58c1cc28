"""Waiting on a Deferred: within a patience, and without recursion.

A backend or a local file that never answers (a hung origin, a stuck disk)
must not hold a transfer, its socket and its peer forever: each call must
answer within the schedule's patience, or the transfer fails.  One timer
per transfer, re-armed for each call, and only for calls that did not
answer at once (a synchronous reader costs nothing).  Both the server's
sessions and the client's local end wait this way.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime


class PendingCall:
    """Holds the pending call; ``on_stall(deferred)`` runs when it overstays."""

    __slots__ = ("pending", "_clock", "_patience", "_on_stall", "_timer")

    def __init__(self, clock: IReactorTime, patience: float, on_stall: Callable[[Deferred[Any]], None]) -> None:
        #: The call being waited on, or None.
        self.pending: Deferred[Any] | None = None
        self._clock = clock
        self._patience = patience
        self._on_stall = on_stall
        self._timer: IDelayedCall | None = None

    def wait_for(self, d: Deferred[Any]) -> None:
        self.pending = d
        if d.called:
            return  # a synchronous answer: nothing to watch
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._patience)
        else:
            self._timer = self._clock.callLater(self._patience, self._stalled)

    def done(self) -> None:
        """The call answered (or the waiter no longer cares)."""
        self.pending = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _stalled(self) -> None:
        self._timer = None
        d, self.pending = self.pending, None
        if d is not None:
            self._on_stall(d)


def take(d: Deferred[Any]) -> list[Any]:
    """``d``'s result, taken: ``[result]`` (a Failure if it failed) when it
    has fired, else ``[]``, which the result fills when it comes (and ``d``
    goes on with None).  A caller that acts on a fired result at once,
    rather than in a callback, drains a queue of them in a loop instead of a
    recursion."""
    box: list[Any] = []
    d.addBoth(box.append)
    return box
