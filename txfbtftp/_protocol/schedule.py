"""When to retransmit, and when to give up.

A :class:`Schedule` is the operator's patience: a sequence of waits.  The
first packet of a session (OACK, or DATA/ACK when there are no options)
follows it exactly, because a PXE ROM may take seconds to answer.

After the first data exchange, an :class:`RTOEstimator` (RFC 6298: smoothed
RTT and variance, Karn's rule, exponential backoff) sets the wait instead, so
a lost packet on a fast link costs milliseconds.  The schedule still bounds
the backoff (its longest wait) and the patience (its total): a client that
disappears mid-transfer is given up on after as long as a silent one at the
start.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

DEFAULT_SPEC = "1,2,4,8,16,32"
#: Bounds of a schedule: more waits, or longer ones, are a mistake, not patience.
MAX_WAITS, MAX_WAIT = 64, 3600.0


@dataclass(frozen=True)
class Schedule:
    """The waits before each retransmission of a session's first packet, in
    seconds; their sum is the patience for a silent peer."""

    waits: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.waits or not all(0 < w <= MAX_WAIT for w in self.waits) or len(self.waits) > MAX_WAITS:
            raise ValueError("a schedule needs 1 to %d waits, each above 0 and at most %g seconds"
                             % (MAX_WAITS, MAX_WAIT))

    @classmethod
    def parse(cls, spec: str) -> Schedule:
        """``"1,2,4,8"`` lists the waits; ``"1x6"`` is base 1 doubled 6 times (1,2,...,32)."""
        spec = spec.strip()
        try:
            if "x" in spec:
                base, _, tries = spec.partition("x")
                b, n = float(base), int(tries)
                if not 1 <= n <= MAX_WAITS:
                    return cls(())  # refused below, with the reason
                return cls(tuple(min(b * (2 ** i), MAX_WAIT * 2) for i in range(n)))
            return cls(tuple(float(w) for w in spec.split(",")))
        except ValueError as e:
            detail = ": %s" % e if str(e).startswith("a schedule") else ""
            raise ValueError("bad timeout schedule %r%s (e.g. '1,2,4,8' or '1x6')" % (spec, detail)) from None

    @property
    def total(self) -> float:
        return sum(self.waits)

    @cached_property
    def longest(self) -> float:
        return max(self.waits)

    def based_on(self, first: float) -> Schedule:
        """The same shape starting at ``first`` (a client's ``timeout`` option)."""
        scale = first / self.waits[0]
        return Schedule(tuple(min(w * scale, MAX_WAIT) for w in self.waits))


DEFAULT_SCHEDULE = Schedule.parse(DEFAULT_SPEC)


class RTOEstimator:
    """RFC 6298 retransmission timeout, with a floor instead of its 1 s minimum."""

    __slots__ = ("floor", "srtt", "rttvar", "rto")

    def __init__(self, floor: float = 0.05) -> None:
        self.floor = floor
        self.srtt: float | None = None
        self.rttvar = 0.0
        #: The current timeout, kept up to date by ``sample``.
        self.rto = floor

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar += (abs(self.srtt - rtt) - self.rttvar) / 4
            self.srtt += (rtt - self.srtt) / 8
        rto = self.srtt + 4 * self.rttvar
        self.rto = rto if rto > self.floor else self.floor


class Watchdog:
    """Per-session retransmission timer policy; pure arithmetic, no clock."""

    __slots__ = ("schedule", "estimator", "tries", "since")

    def __init__(self, schedule: Schedule, estimator: RTOEstimator | None = None) -> None:
        self.schedule = schedule
        self.estimator = estimator
        self.tries = 0
        self.since = 0.0

    def progress(self, now: float) -> float:
        """The peer made progress: the wait before the next retransmission."""
        self.tries = 0
        self.since = now
        est = self.estimator
        if est is not None and est.srtt is not None:
            return min(est.rto, self.schedule.longest)
        return self.schedule.waits[0]

    def expired(self, now: float) -> float | None:
        """A wait ran out: the next wait, or None to give up."""
        self.tries += 1
        est = self.estimator
        if est is not None and est.srtt is not None:
            left = self.schedule.total - (now - self.since)
            if left <= 0:
                return None
            return min(est.rto * (2 ** self.tries), self.schedule.longest, left)
        waits = self.schedule.waits
        if self.tries >= len(waits):
            return None
        return waits[self.tries]
