"""What one source address may cost: budgets over token buckets, in bounded memory.

A boot server answers whoever asks, and anyone can ask with someone else's
address.  Budgets per source keep what one address can cost (ERRORs from
the listening port, bytes to peers that never proved they are there) small
however many packets arrive, while thousands of distinct clients, one or two
requests each, never meet them.
"""
from __future__ import annotations

from collections.abc import Callable

from txfbtftp._buckets import Buckets
from txfbtftp._observe.stats import ServerStats


class UnverifiedBudget:
    """What peers that have not proved they are there may cost, per source
    address: at most ``max_sessions`` such sessions at once, and ``rate``
    bytes a second (``burst`` at once) sent to them.  0 is no limit.

    Loopback addresses are exempt: a packet from one cannot come from the
    network, so nobody can forge it to us.
    """

    def __init__(self, clock: Callable[[], float], max_sessions: int = 16, rate: float = 512 * 1024,
                 burst: float = 512 * 1024) -> None:
        self.max_sessions = max_sessions
        self._open: dict[str, int] = {}
        self._bytes = Buckets(clock, rate, burst) if rate > 0 else None

    def admit(self, host: str, waiting: int = 0) -> bool:
        """May one more unverified session start for ``host``, which has
        ``waiting`` more requests queued (unverified too)?"""
        return (not self.max_sessions or self._open.get(host, 0) + waiting < self.max_sessions
                or _loopback(host))

    def opened(self, host: str) -> None:
        self._open[host] = self._open.get(host, 0) + 1

    def settled(self, host: str) -> None:
        """A session of ``host`` was verified, or ended."""
        n = self._open.get(host, 0) - 1
        if n > 0:
            self._open[host] = n
        else:
            self._open.pop(host, None)

    def spend(self, host: str, nbytes: int) -> bool:
        """May ``nbytes`` go to ``host``, not verified yet?"""
        return self._bytes is None or self._bytes.take(host, nbytes) or _loopback(host)


def _loopback(host: str) -> bool:
    return host.startswith("127.") or host == "::1"


class Gate:
    """What goes to one peer until it proves it is there, spent from its
    source address's budget; counted there as one unverified session."""

    __slots__ = ("settled", "_budget", "_host", "_stats")

    def __init__(self, budget: UnverifiedBudget, host: str, stats: ServerStats) -> None:
        self.settled = False
        self._budget = budget
        self._host = host
        self._stats = stats
        budget.opened(host)

    def lets(self, verified: bool, out: list[bytes]) -> bool:
        """May ``out`` go?  A verified peer settles the gate for good."""
        if verified:
            self.settle()
            return True
        if self._budget.spend(self._host, sum(map(len, out))):
            return True
        self._stats.increment_counter("packets_withheld")
        return False

    def settle(self) -> None:
        if not self.settled:
            self.settled = True
            self._budget.settled(self._host)
