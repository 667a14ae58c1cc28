"""Session ports from an operator's range (``--port-range``), for firewalls."""
from __future__ import annotations

from collections.abc import Iterator


class PortRange:
    """Hands out session ports from ``low..high``, round robin.

    Ports held by this process are skipped without a system call; ports
    other programs hold are found by a failing bind.
    """

    def __init__(self, low: int, high: int) -> None:
        if not 0 < low <= high <= 65535:
            raise ValueError("port range must be within 1..65535, low <= high")
        self.low, self.high = low, high
        self._next = low
        self.in_use: set[int] = set()

    def candidates(self) -> Iterator[int]:
        size = self.high - self.low + 1
        for _ in range(size):
            port = self._next
            self._next = self.low if port >= self.high else port + 1
            if port not in self.in_use:
                yield port
