"""A coarse timer wheel for session deadlines.

A session's deadline moves forward with every ACK.  With one DelayedCall per
session, the call either moves on every packet or fires early and is made
again about once per retransmission timeout, which in a boot storm is about
as often as a block arrives.  Here a session sits in a slot of
``resolution`` seconds; the wheel wakes once per occupied slot (one reactor
call, an integer heap) and asks the sessions there whether their deadline
has really come.  A session whose deadline only moved later stays where it
is; one whose deadline moved earlier is filed again, and its old entry is
ignored when that slot comes.
"""
from __future__ import annotations

import heapq
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class Timed(Protocol):
    """Something filed in a :class:`Wheel`."""

    def wheel_fired(self, slot: int, now: float) -> None: ...


class Wheel:
    """Deadlines in slots of ``resolution`` seconds, one reactor call at a time."""

    def __init__(self, reactor: IReactorTime, resolution: float = 0.002) -> None:
        self.reactor = reactor
        self.resolution = resolution
        self._slots: dict[int, list[Timed]] = {}
        self._heap: list[int] = []
        self._call: IDelayedCall | None = None
        self._call_slot: int | None = None

    def arm(self, item: Timed, when: float) -> int:
        """File ``item`` to be told (``item.wheel_fired(slot, now)``) at ``when``
        or up to one resolution later; returns its slot."""
        slot = -int(-(when - 1e-9) // self.resolution)  # the boundary at or after ``when``
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = [item]
            heapq.heappush(self._heap, slot)
            if self._call_slot is None or slot < self._call_slot:
                self._schedule(slot)
        else:
            bucket.append(item)
        return slot

    def start_of(self, slot: int) -> float:
        """The earliest deadline that still belongs in ``slot``."""
        return (slot - 1) * self.resolution

    def _schedule(self, slot: int) -> None:
        delay = max(0.0, slot * self.resolution - self.reactor.seconds())
        if self._call is not None and self._call.active():
            self._call.reset(delay)
        else:
            self._call = self.reactor.callLater(delay, self._fire)
        self._call_slot = slot

    def _fire(self) -> None:
        self._call = self._call_slot = None
        now = self.reactor.seconds()
        heap, res = self._heap, self.resolution
        while heap and heap[0] * res <= now + 1e-9:
            slot = heapq.heappop(heap)
            for item in self._slots.pop(slot):
                item.wheel_fired(slot, now)
        # Items filed during this pass may have scheduled a later slot than
        # one already waiting: the earliest must come first.
        if heap and (self._call_slot is None or heap[0] < self._call_slot):
            self._schedule(heap[0])

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self._call_slot = None
        self._slots.clear()
        self._heap.clear()
