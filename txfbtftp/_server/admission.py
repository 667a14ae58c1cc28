"""Admission control: who starts a transfer now, and who waits.

When a rack powers on, serving every request at once makes every transfer
slow, and slow transfers time out.  With a limit on active sessions, the
requests over it wait in a bounded FIFO queue and start as soon as a slot
frees: admitted clients finish fast, queued ones start within their ROM's
patience, and a full queue is answered "server busy" at once.  A client
repeating its request while queued keeps its place (and proves it is still
there); one that has gone quiet for ``max_wait`` seconds loses it.  A
request admitted that cannot start after all (no session port is free: a
program outside the server holds the rest of ``--port-range``) is put back
first in line and waits for a session to end.
"""
from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable

Key = tuple[str, int]


class Verdict(enum.Enum):
    START = "start"
    QUEUED = "queued"
    REPEATED = "repeated"
    BUSY = "busy"


class Admission:
    """Counts active sessions and keeps the waiting line.  Pure bookkeeping:
    the caller passes the time and a ``start`` callable per request."""

    def __init__(self, max_sessions: int = 0, max_queue: int = 1024, per_client: int = 0,
                 max_wait: float = 30.0) -> None:
        self.max_sessions = max_sessions
        self.max_queue = max_queue
        self.per_client = per_client
        self.max_wait = max_wait
        self.active = 0
        self._by_client: dict[str, int] = {}
        self._queue: OrderedDict[Key, list] = OrderedDict()
        self._waiting: dict[str, int] = {}  # queued requests, by source address
        self._admitting = False
        self._stuck = False  # a request was put back: wait for a release

    @property
    def queued(self) -> int:
        return len(self._queue)

    def waits(self, key: Key) -> bool:
        return key in self._queue

    def waiting(self, host: str) -> int:
        """How many requests of ``host`` wait in the queue."""
        return self._waiting.get(host, 0)

    def _enqueue(self, key: Key, entry: list, first: bool = False) -> None:
        self._queue[key] = entry
        if first:
            self._queue.move_to_end(key, last=False)
        self._waiting[key[0]] = self._waiting.get(key[0], 0) + 1

    def _dequeue(self, key: Key) -> list:
        entry = self._queue.pop(key)
        _one_less(self._waiting, key[0])
        return entry

    def _room(self, host: str) -> bool:
        if self.max_sessions and self.active >= self.max_sessions:
            return False
        return not self.per_client or self._by_client.get(host, 0) < self.per_client

    def offer(self, key: Key, start: Callable[[], None], now: float) -> Verdict:
        """A request from ``key``: start it, queue it, or refuse it."""
        waiting = self._queue.get(key)
        if waiting is not None:
            waiting[0], waiting[1] = start, now  # the latest request, seen just now
            return Verdict.REPEATED
        if not self._queue and self._room(key[0]):
            self._begin(key[0])
            start()
            return Verdict.QUEUED if key in self._queue else Verdict.START
        if len(self._queue) >= self.max_queue:
            self._expire(now)
            if len(self._queue) >= self.max_queue:
                return Verdict.BUSY
        self._enqueue(key, [start, now])
        self._admit(now)
        return Verdict.QUEUED if key in self._queue else Verdict.START

    def clear(self) -> None:
        """Nobody waits any more (the server is stopping)."""
        self._queue.clear()
        self._waiting.clear()

    def release(self, host: str, now: float) -> None:
        """A session of ``host`` ended: admit whoever can go next."""
        self._end(host)
        self._stuck = False
        self._admit(now)

    def put_back(self, key: Key, start: Callable[[], None], now: float) -> bool:
        """The request of ``key`` was admitted but could not start: it waits
        first in line until a session ends.  False (and it is forgotten)
        when no session is active to end."""
        self._end(key[0])
        if not self.active:
            return False
        self._enqueue(key, [start, now], first=True)
        self._stuck = True
        return True

    def _end(self, host: str) -> None:
        self.active -= 1
        _one_less(self._by_client, host)

    def _begin(self, host: str) -> None:
        self.active += 1
        self._by_client[host] = self._by_client.get(host, 0) + 1

    def _expire(self, now: float) -> None:
        for key in [k for k, (_, seen) in self._queue.items() if now - seen > self.max_wait]:
            self._dequeue(key)

    def _admit(self, now: float) -> None:
        # A started session may end at once (file not found) and release its
        # slot from inside start(): the outer call keeps admitting instead.
        if self._admitting:
            return
        self._admitting = True
        try:
            self._expire(now)
            while self._queue and not self._stuck and not (self.max_sessions and self.active >= self.max_sessions):
                key = next((k for k in self._queue if self._room(k[0])), None)
                if key is None:
                    return
                start, _ = self._dequeue(key)
                self._begin(key[0])
                start()
        finally:
            self._admitting = False


def _one_less(counts: dict[str, int], host: str) -> None:
    """Count one less for ``host``, forgetting it at none."""
    n = counts.get(host, 0) - 1
    if n > 0:
        counts[host] = n
    else:
        counts.pop(host, None)
