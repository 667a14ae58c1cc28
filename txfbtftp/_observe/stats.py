"""The server's running counters, and its periodic report.

:class:`ServerStats` is bumped once per request, malformed packet and ended
session (never per packet), and hands each
:class:`~txfbtftp._observe.records.SessionRecord` to its listeners (an
application's callback, the Prometheus metrics).  Everything runs on the
reactor thread, so unlike fbtftp's threaded ``ServerStats`` (whose reading
and resetting API this one keeps) there are no locks.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from txfbtftp._observe.logs import log
from txfbtftp._observe.records import SessionRecord

SessionListener = Callable[[SessionRecord], Any]


class ServerStats:
    """Counters since the last reset, totals since start, and live gauges.

    Counters (all integers; absent means zero):

    ``sessions_started``, ``sessions_completed``, ``sessions_failed_<reason>``
    (``reason`` from :data:`REASONS` other than ``ok`` and ``tsize_probe``),
    ``tsize_probes``, ``bytes_downloaded``, ``bytes_uploaded`` (payload, each
    byte once), ``bytes_sent`` (retransmissions included), ``retransmits``,
    ``duplicates``, ``malformed_packets`` (undecodable requests and stray
    packets on the listening port), ``requests_refused_busy`` (the queue was
    full, or no session socket could be opened), ``requests_waiting_for_port``
    (put back in the queue until a session port frees); and those a backend counts
    (:class:`~txfbtftp.ICounting`): the ``http:`` cache's ``cache_hits``,
    ``cache_fills`` (files fetched into it) and ``cache_uncached``
    (downloads served from the origin because they could not be cached).

    The one gauge, :attr:`active`, is the number of sessions in progress.

    The reading and resetting methods are fbtftp's, so a callback written for
    fbtftp's ``server_stats_callback`` works unchanged.  Resetting touches
    only the counters: :attr:`totals` keep counting for exporters that need
    monotonic values.
    """

    def __init__(self, server_addr: str | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.server_addr = server_addr
        self.interval = interval
        self._clock = clock
        self.start_time = clock()
        self._counters: Counter[str] = Counter()
        #: Every counter since start; never reset.
        self.totals: Counter[str] = Counter()
        #: Sessions in progress here, and in each worker process (``--workers``).
        self.active = 0
        self.peers_active: dict[Any, int] = {}
        #: Called with each :class:`SessionRecord`; one that raises is logged and skipped.
        self.session_listeners: list[SessionListener] = []
        #: Called with no arguments when a counter changes (and so, with it,
        #: :attr:`active`): a worker reports on change, not on a timer.  One
        #: that raises is logged and skipped.
        self.change_listeners: list[Callable[[], None]] = []
        self._loop: LoopingCall | None = None

    # -- fbtftp's API ---------------------------------------------------------------
    def get_all_counters(self) -> dict[str, int]:
        return dict(self._counters)

    def get_and_reset_all_counters(self) -> dict[str, int]:
        counters = dict(self._counters)
        self._counters.clear()
        return counters

    def get_counter(self, name: str) -> int:
        return self._counters[name]

    def set_counter(self, name: str, value: int) -> None:
        self._counters[name] = value
        self._changed()

    def increment_counter(self, name: str, increment: int = 1) -> None:
        self._counters[name] += increment
        self.totals[name] += increment
        self._changed()

    def _changed(self) -> None:
        for listener in self.change_listeners:
            try:
                listener()
            except Exception:
                log.failure("statistics change listener {listener!r} failed", listener=listener)

    def reset_counter(self, name: str) -> None:
        self._counters[name] = 0

    def get_and_reset_counter(self, name: str) -> int:
        value = self._counters[name]
        self._counters[name] = 0
        return value

    def reset_all_counters(self) -> None:
        self._counters.clear()

    def duration(self) -> float:
        """Seconds since these statistics started."""
        return self._clock() - self.start_time

    @property
    def sessions_active(self) -> int:
        return self.active + sum(self.peers_active.values())

    def get_gauges(self) -> dict[str, int]:
        return {"sessions_active": self.sessions_active}

    # -- what the server reports -------------------------------------------------------
    def session_started(self) -> None:
        """A request was accepted and its session created."""
        self.active += 1
        self.increment_counter("sessions_started")

    def session_ended(self, record: SessionRecord) -> None:
        """Count a finished session and hand its record to the listeners."""
        self.active -= 1
        self.count(record)
        for listener in self.session_listeners:
            try:
                listener(record)
            except Exception:
                log.failure("session statistics callback {callback!r} failed", callback=listener)

    def count(self, record: SessionRecord) -> None:
        """Add a finished session's figures to the counters."""
        inc = self.increment_counter
        reason = record.reason
        if reason == "ok":
            inc("sessions_completed")
        elif reason == "tsize_probe":
            inc("tsize_probes")
        else:
            inc("sessions_failed_" + reason)
        if record.bytes_transferred:
            inc("bytes_downloaded" if record.direction == "read" else "bytes_uploaded", record.bytes_transferred)
        for name in ("bytes_sent", "retransmits", "duplicates"):
            value = getattr(record, name)
            if value:
                inc(name, value)

    # -- the periodic report -------------------------------------------------------------
    def start_reporting(self, clock: IReactorTime, callback: Callable[[ServerStats], Any]) -> LoopingCall:
        """Call ``callback(self)`` every :attr:`interval` seconds of ``clock`` (a reactor).

        LoopingCall schedules by the start time, so calls do not drift; a
        callback that raises (or whose Deferred fails) is logged and the
        schedule goes on.
        """
        if not self.interval or self.interval <= 0:
            raise ValueError("reporting needs a positive interval")
        self.stop_reporting()

        def report() -> None:
            try:
                result = callback(self)
            except Exception:
                log.failure("server statistics callback {callback!r} failed", callback=callback)
                return
            if isinstance(result, Deferred):
                result.addErrback(lambda f: log.failure("server statistics callback {callback!r} failed",
                                                        f, callback=callback))

        loop = self._loop = LoopingCall(report)
        loop.clock = clock
        loop.start(self.interval, now=False)
        return loop

    def stop_reporting(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None


def log_server_stats(stats: ServerStats) -> None:
    """A ``server_stats_callback`` that logs the interval's counters and resets them.

    The one ``twistd tftp`` installs: a line per interval, with every counter
    and gauge as an event key for ``--log-format json``.
    """
    counters = stats.get_and_reset_all_counters()
    fields = dict(counters, **stats.get_gauges())
    log.info("stats: {started} sessions started, {completed} completed, {failed} failed, "
             "{active} active; {sent} bytes sent, {retransmits} retransmissions",
             started=counters.get("sessions_started", 0), completed=counters.get("sessions_completed", 0),
             active=stats.sessions_active,
             failed=sum(v for k, v in counters.items() if k.startswith("sessions_failed_")),
             sent=counters.get("bytes_sent", 0), retransmits=counters.get("retransmits", 0),
             interval=stats.interval, counters=fields)
