"""What happened: one record per session, and the server's running counters.

The session machines already count what a record needs (bytes, packets,
retransmissions, duplicates) with plain integer increments; nothing here runs
per packet.  A :class:`SessionRecord` is built once, when a session ends,
however it ends: completed, failed, timed out, aborted by the client, or
refused before a transfer started.  :class:`ServerStats` is bumped once per
request, malformed packet and ended session, and hands each record to its
listeners (an application's callback, the Prometheus metrics).

Everything runs on the reactor thread, so unlike fbtftp's threaded
``ServerStats`` (whose reading and resetting API this one keeps) there are no
locks.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from txfbtftp import packet
from txfbtftp.logs import log
from txfbtftp.session import Outcome

#: Why a session that did not succeed ended, by the error code we sent.
_SERVER_REASONS = {
    packet.ERR_NOT_FOUND: "not_found",
    packet.ERR_ACCESS: "access_violation",
    packet.ERR_DISK_FULL: "disk_full",
    packet.ERR_ILLEGAL: "illegal_operation",
    packet.ERR_EXISTS: "file_exists",
    packet.ERR_OPTIONS: "options_refused",
}

#: Every value :attr:`SessionRecord.reason` takes: a bounded set, fit for a
#: metric label.
REASONS = ("ok", "tsize_probe", "client_error", "timeout") + tuple(_SERVER_REASONS.values()) + ("server_error",)


@dataclass(frozen=True)
class SessionRecord:
    """One finished session, as plain values (JSON-ready via :meth:`as_dict`).

    Packets are counted after the request (which is not): a session refused
    before its transfer started has sent one packet, its ERROR.
    """

    client: str
    client_port: int
    #: The address and port the request was sent to.
    local: str
    local_port: int
    path: str
    mode: str
    #: ``"read"`` (RRQ, a download) or ``"write"`` (WRQ, an upload).
    direction: str
    options_requested: Dict[str, str]
    #: What the OACK carried; empty when no OACK was sent.
    options_acknowledged: Dict[str, str]
    #: The block and window sizes used; None when no transfer started.
    blksize: Optional[int]
    windowsize: Optional[int]
    #: The negotiated ``tsize``: the file's size on a read, the announced size on a write.
    tsize: Optional[int]
    #: Wall-clock times (``time.time()``).
    started_at: float
    ended_at: float
    #: Seconds from the request to the end, by the reactor's clock.
    duration: float
    #: Seconds from the request to the client's first packet on the session
    #: (its answer to our first packet: the backend's latency plus a round
    #: trip); None if the client never answered.
    time_to_first_packet: Optional[float]
    #: Payload bytes moved, each counted once.
    bytes_transferred: int
    #: Payload bytes we sent, retransmissions included (zero for uploads).
    bytes_sent: int
    packets_sent: int
    packets_received: int
    retransmits: int
    #: Duplicate ACKs (downloads) or duplicate DATA blocks (uploads) received.
    duplicates: int
    #: ``ok``, ``client-error``, ``timeout`` or ``server-error``.
    outcome: str
    #: The TFTP error code sent (server-error) or received (client-error).
    error_code: Optional[int]
    error_message: str
    #: The client ended the session with ERROR 8 right after our OACK
    #: (UEFI asking for the size only).
    tsize_probe: bool

    @classmethod
    def from_session(cls, session: Any, now: float) -> "SessionRecord":
        """The record of ``session`` (a :class:`txfbtftp.server.Session`) ending at reactor time ``now``."""
        req = session.request
        m = session.machine
        neg = session.negotiated
        outcome = session.outcome
        local_host, local_port = session.transfer_request.local
        if m is not None:
            counts = (m.bytes, m.bytes_sent, m.packets_sent, m.packets_received, m.retransmits, m.duplicates)
            first = m.first_reply_at
        else:
            # Refused before the transfer started: the one packet sent was the ERROR.
            counts = (0, 0, 1 if outcome is Outcome.SERVER_ERROR else 0, 0, 0, 0)
            first = None
        return cls(
            client=session.key[0], client_port=session.key[1], local=local_host, local_port=local_port,
            path=req.filename, mode=req.mode, direction="read" if req.is_read else "write",
            options_requested=dict(req.options),
            options_acknowledged=dict(neg.accepted) if neg is not None else {},
            blksize=m.blksize if m is not None else None,
            windowsize=m.windowsize if m is not None else None,
            tsize=neg.tsize if neg is not None else None,
            started_at=session.started_at,
            ended_at=session.ended_at or time.time(),
            duration=max(0.0, now - session.started_clock),
            time_to_first_packet=None if first is None else max(0.0, first - session.started_clock),
            bytes_transferred=counts[0], bytes_sent=counts[1], packets_sent=counts[2],
            packets_received=counts[3], retransmits=counts[4], duplicates=counts[5],
            outcome=outcome.value if outcome is not None else Outcome.SERVER_ERROR.value,
            error_code=session.error_code, error_message=session.error_message or "",
            tsize_probe=bool(m is not None and m.tsize_probe))

    @property
    def reason(self) -> str:
        """The outcome in one word from :data:`REASONS`: server errors are told apart by code."""
        if self.outcome == Outcome.OK.value:
            return "ok"
        if self.tsize_probe:
            return "tsize_probe"
        if self.outcome == Outcome.CLIENT_ERROR.value:
            return "client_error"
        if self.outcome == Outcome.TIMEOUT.value:
            return "timeout"
        return _SERVER_REASONS.get(self.error_code, "server_error")  # type: ignore[arg-type]

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


SessionListener = Callable[[SessionRecord], Any]


class ServerStats:
    """Counters since the last reset, totals since start, and live gauges.

    Counters (all integers; absent means zero):

    ``sessions_started``, ``sessions_completed``, ``sessions_failed_<reason>``
    (``reason`` from :data:`REASONS` other than ``ok`` and ``tsize_probe``),
    ``tsize_probes``, ``bytes_downloaded``, ``bytes_uploaded`` (payload, each
    byte once), ``bytes_sent`` (retransmissions included), ``retransmits``,
    ``duplicates``, ``malformed_packets`` (undecodable requests and stray
    packets on the listening port), ``requests_refused_busy`` (no session
    socket could be opened).

    The one gauge, :attr:`active`, is the number of sessions in progress.

    The reading and resetting methods are fbtftp's, so a callback written for
    fbtftp's ``server_stats_callback`` works unchanged.  Resetting touches
    only the counters: :attr:`totals` keep counting for exporters that need
    monotonic values.
    """

    def __init__(self, server_addr: Optional[str] = None, interval: Optional[float] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.server_addr = server_addr
        self.interval = interval
        self._clock = clock
        self.start_time = clock()
        self._counters: Counter = Counter()
        #: Every counter since start; never reset.
        self.totals: Counter = Counter()
        #: Sessions in progress here, and in each worker process (``--workers``).
        self.active = 0
        self.peers_active: Dict[Any, int] = {}
        #: Called with each :class:`SessionRecord`; one that raises is logged and skipped.
        self.session_listeners: List[SessionListener] = []
        self._loop: Optional[LoopingCall] = None

    # -- fbtftp's API ---------------------------------------------------------------
    def get_all_counters(self) -> Dict[str, int]:
        return dict(self._counters)

    def get_and_reset_all_counters(self) -> Dict[str, int]:
        counters = dict(self._counters)
        self._counters.clear()
        return counters

    def get_counter(self, name: str) -> int:
        return self._counters[name]

    def set_counter(self, name: str, value: int) -> None:
        self._counters[name] = value

    def increment_counter(self, name: str, increment: int = 1) -> None:
        self._counters[name] += increment
        self.totals[name] += increment

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

    def get_gauges(self) -> Dict[str, int]:
        return {"sessions_active": self.sessions_active}

    # -- what the server reports -------------------------------------------------------
    def session_started(self) -> None:
        """A request was accepted and its session created."""
        self.active += 1
        self.increment_counter("sessions_started")

    def session_ended(self, session: Any, now: float) -> SessionRecord:
        """Count a finished session and hand its record to the listeners."""
        record = SessionRecord.from_session(session, now)
        self.active -= 1
        self.count(record)
        for listener in self.session_listeners:
            try:
                listener(record)
            except Exception:
                log.failure("session statistics callback {callback!r} failed", callback=listener)
        return record

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
    def start_reporting(self, clock: Any, callback: Callable[["ServerStats"], Any]) -> LoopingCall:
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
