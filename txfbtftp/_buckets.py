"""Token buckets, one per key, in bounded memory.

The server budgets what each source address may cost with them
(:mod:`txfbtftp._server.buckets`), and the log caps its lines about bad
packets from all sources together with one (:mod:`txfbtftp._observe.logs`).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class Buckets:
    """``rate`` per second, up to ``burst``, for each key; at most ``size`` keys
    remembered (the least recently used are forgotten: a full bucket)."""

    def __init__(self, clock: Callable[[], float], rate: float, burst: float, size: int = 16384) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self._size = size
        self._level: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, amount: float = 1.0) -> bool:
        """Spend ``amount`` from ``key``'s bucket if it holds that much."""
        now = self._clock()
        level, since = self._level.pop(key, (self.burst, now))
        level = min(self.burst, level + (now - since) * self.rate)
        ok = level >= amount
        if ok:
            level -= amount
        self._level[key] = (level, now)
        if len(self._level) > self._size:
            self._level.popitem(last=False)
        return ok
