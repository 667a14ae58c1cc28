"""One transfer's driver: the backend on one side, a machine in the middle,
a link to the client on the other.

A session asks the backend for a reader or writer (the only Deferred on the
way in), negotiates the options and starts a machine from
:mod:`txfbtftp._protocol`.  From then on every step (a datagram, a deadline,
a backend's answer) runs the machine with one outbox, and what the step put
in it goes out in one batch through the link.  :class:`Session` holds what
both directions share: waiting on the backend (it must answer within the
watchdog's patience), the session's deadline (a slot in the host's timer
wheel, or kept by the link when a compiled lane serves the session), and
the end (the record, releasing the file and the link).  Until the client has
proved it is there, what goes to it passes its address's budget (a
:class:`~txfbtftp._server.buckets.Gate`): a forged request costs its victim
little.  The backend is given the request's clean name
(:mod:`txfbtftp._protocol.paths`); a name no backend may see is refused here.
:class:`~txfbtftp._server.read.ReadSession` and
:class:`~txfbtftp._server.write.WriteSession` add their direction.
"""
from __future__ import annotations

import time
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from txfbtftp._interfaces import Address, IBackend, MaybeDeferred, TransferRequest
from txfbtftp._net.listener import Local
from txfbtftp._net.links import Link
from txfbtftp._observe.logs import fmt, log
from txfbtftp._observe.records import SessionRecord, log_record
from txfbtftp._observe.stats import ServerStats
from txfbtftp._protocol import errors, packet
from txfbtftp._protocol.machine import Machine, Outbox, Outcome, State
from txfbtftp._protocol.options import Negotiated, negotiate
from txfbtftp._protocol.paths import normalize
from txfbtftp._protocol.schedule import RTOEstimator, Watchdog
from txfbtftp._server.buckets import Gate, UnverifiedBudget
from txfbtftp._server.config import ServerConfig
from txfbtftp._wait import PendingCall
from txfbtftp._server.timers import Wheel

MODES = ("octet", "netascii")
SHUTTING_DOWN = "Server shutting down"
_M = TypeVar("_M", bound=Machine)


class SessionHost(Protocol):
    """What a session needs from the listening protocol that made it."""

    backend: IBackend
    config: ServerConfig
    clock: IReactorTime
    wheel: Wheel
    budget: UnverifiedBudget
    stats: ServerStats

    def session_ended(self, session: Session[Any]) -> None:
        """Account for a session that has ended (its record is set)."""


class _Unlinked:
    """The link of a session that has none (yet, or at all)."""

    port: int | None = None

    def send(self, packets: list[bytes]) -> None:
        pass

    def drain(self) -> None:
        pass

    def open_lane(self, session: Any, machine: Any, reader: Any) -> bool:
        return False

    def keep_deadline(self, deadline: float) -> None:
        pass

    def close(self) -> None:
        pass


class Session(Generic[_M]):
    """What both directions share; subclasses supply the backend call and the machine."""

    def __init__(self, host: SessionHost, request: packet.Request, peer: tuple[Any, ...], key: Address,
                 local: Local, listening: Address) -> None:
        self.host = host
        self.request = request
        #: The client in natural form; ``peer`` is its socket address.
        self.key = key
        self.peer = peer
        self.local = local
        self.transfer_request, self._refusal = _transfer_request(request, key, local, listening)
        self.link: Link = _Unlinked()
        self.machine: _M | None = None
        self.negotiated: Negotiated | None = None
        self.outcome: Outcome | None = None
        self.error_code: int | None = None
        self.error_message = ""
        #: The session's record, once it has ended.
        self.record: SessionRecord | None = None
        self.started_at = time.time()
        self.started_clock = host.clock.seconds()
        self._seconds = host.clock.seconds
        self._out: Outbox = []
        self._slot: int | None = None    # where the session waits in the timer wheel
        self._slot_start = 0.0
        self._link_keeps_time = False    # or the link does (a compiled lane)
        self._wait = PendingCall(host.clock, host.config.schedule.total, self._stalled)
        self._closed = False
        #: Until the client proves it is there, what goes to it is budgeted.
        self._gate: Gate | None = Gate(host.budget, key[0], host.stats)

    @property
    def complete(self) -> bool:
        """Every byte has moved; the session only dallies for a repeated last block."""
        return False

    @property
    def last_heard_at(self) -> float:
        """When the client's latest packet on the session was read; until it
        answered our first packet, forever (its repeated request is a
        retransmission)."""
        m = self.machine
        if m is None or not m.established or m.last_heard_at is None:
            return float("inf")
        return m.last_heard_at

    # -- what a direction supplies ------------------------------------------------
    def _open(self, path: str, request: TransferRequest) -> MaybeDeferred[Any]:
        raise NotImplementedError

    def _adopt(self, handle: Any) -> int | None:
        """Keep the backend's reader or writer; the size to offer as tsize."""
        raise NotImplementedError

    def _discard(self, handle: Any) -> None:
        """Give back a reader or writer that arrived after the session ended."""
        raise NotImplementedError

    def _machine(self, neg: Negotiated, watchdog: Watchdog, oack: bytes | None) -> _M:
        raise NotImplementedError

    def _started(self, machine: _M, now: float) -> None:
        """The machine has started; a sender fills its first window here."""

    def _release(self, outcome: Outcome | None) -> None:
        """Close or abort the reader or writer."""

    def receive(self, data: bytes) -> None:
        """A datagram from this session's client."""
        raise NotImplementedError

    # -- start-up -------------------------------------------------------------------
    def begin(self, link: Link) -> None:
        """Start on ``link``, the session's way to its client."""
        self.link = link
        if self._refusal is not None:
            self._refuse(self._refusal.code, self._refusal.message)
            return
        d = maybeDeferred(self._open, self.transfer_request.path, self.transfer_request)
        self._wait.wait_for(d)
        d.addCallbacks(self._opened, self._open_failed)
        d.addErrback(self._crashed)

    def _opened(self, handle: Any) -> None:
        self._wait.done()
        if self._closed:
            self._discard(handle)
            return
        cfg = self.host.config
        size = self._adopt(handle)
        try:
            neg = self.negotiated = negotiate(self.request, cfg.limits, size)
        except errors.TFTPError as e:
            self._refuse(e.code, e.message)
            return
        m = self.machine = self._machine(neg, _watchdog(cfg, neg), packet.oack(neg.accepted) if neg.accepted else None)
        now = self._seconds()
        m.start(now, self._out)
        self._started(m, now)
        self._flush()
        self._after(m, now)

    def _open_failed(self, failure: Failure) -> None:
        self._wait.done()
        if self._closed:
            return
        code, message, expected = errors.to_tftp(failure.value or Exception())
        if not expected:
            log.failure("backend failed for {path!r} from {peer}", failure,
                        path=self.request.filename, peer=fmt(self.key))
        self._refuse(code, message)

    def _crashed(self, failure: Failure) -> None:
        log.failure("session for {peer} crashed", failure, peer=fmt(self.key))
        if not self._closed:
            self._refuse(packet.ERR_UNDEFINED, packet.MESSAGES[packet.ERR_UNDEFINED])

    def _refuse(self, code: int, message: str) -> None:
        self._out.append(packet.error(code, message))
        self._close(Outcome.SERVER_ERROR, code, message)

    def _flush(self) -> None:
        out = self._out
        if out:
            gate = self._gate
            if gate is None or self._passes(gate, out):
                self.link.send(out)
            out.clear()

    def _passes(self, gate: Gate, out: Outbox) -> bool:
        """May ``out`` go to a client that has not proved it is there yet?"""
        m = self.machine
        if not gate.lets(m is not None and m.verified, out):
            return False
        if gate.settled:
            self._gate = None  # verified: the hot path skips the gate from now on
        return True

    def repeat(self) -> None:
        """The client repeated its request before answering us: answer again."""
        m = self.machine
        if m is not None and not m.established and not self._closed:
            m.repeat(self._seconds(), self._out)
            self._flush()

    def _io_failed(self, failure: Failure) -> None:
        self._wait.done()
        m = self.machine
        if self._closed or m is None:
            return
        code, message, expected = errors.to_tftp(failure.value or Exception())
        if not expected:
            log.failure("I/O failed for {path!r} from {peer}", failure,
                        path=self.request.filename, peer=fmt(self.key))
        m.fail(code, message, self._out)
        self._flush()
        self._after(m, self._seconds())

    # -- waiting on the backend ---------------------------------------------------------
    def _stalled(self, d: Deferred[Any]) -> None:
        if self._closed:
            return
        log.info("{peer} {path!r}: no answer from the backend in {s:.0f}s", peer=fmt(self.key),
                 path=self.request.filename, s=self.host.config.schedule.total)
        m = self.machine
        if m is None:
            self._refuse(packet.ERR_UNDEFINED, "Timed out fetching the file")
        else:
            m.fail(packet.ERR_UNDEFINED, "Timed out fetching the file", self._out)
            self._flush()
            self._after(m, self._seconds())
        d.cancel()

    # -- time and the end -----------------------------------------------------------------
    def _after(self, m: Machine, now: float) -> None:
        if m.state is State.DONE:
            self._close(m.outcome, m.error_code, m.error_message)
            return
        deadline = m.deadline
        if deadline is not None and self._link_keeps_time:
            self.link.keep_deadline(deadline)
        elif deadline is not None and (self._slot is None or deadline < self._slot_start):
            wheel = self.host.wheel
            self._slot = wheel.arm(self, deadline)
            self._slot_start = wheel.start_of(self._slot)

    def wheel_fired(self, slot: int, now: float) -> None:
        """Our slot in the timer wheel came: is the deadline really here?"""
        if slot == self._slot and self.machine is not None:  # else left behind: the deadline moved earlier
            self._slot = None
            self.deadline_came(self.machine, now)

    def deadline_came(self, m: Machine, now: float) -> None:
        """The wheel, or the link that keeps our deadline, says it has come.
        Told at or after it, a float's last bit must not make it early."""
        if self._closed or self.machine is not m:
            return
        if m.deadline is not None and now + 1e-6 >= m.deadline:
            # Under load the answer is often there, unread: read it before
            # deciding it was lost.
            self.link.drain()
            if self._closed:
                return
            if m.deadline is not None and now + 1e-6 >= m.deadline:
                m.timeout(max(now, m.deadline), self._out)
                self._flush()
        self._after(m, now)

    def shut_down(self) -> None:
        """End with ``ERROR 0`` "Server shutting down": the server is stopping."""
        if self._closed:
            return
        m = self.machine
        if m is not None:
            m.fail(packet.ERR_UNDEFINED, SHUTTING_DOWN, self._out)
        else:
            self._out.append(packet.error(packet.ERR_UNDEFINED, SHUTTING_DOWN))
        self._close(Outcome.SHUTDOWN, packet.ERR_UNDEFINED, SHUTTING_DOWN)

    def abandon(self, why: str) -> None:
        """End without a word to the client."""
        if self._closed:
            return
        m = self.machine
        if m is not None:
            m.abandon(why)
            self._close(m.outcome, m.error_code, m.error_message)
        else:
            self._close(Outcome.CLIENT_ERROR, None, why)

    def _close(self, outcome: Outcome | None, code: int | None, message: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.outcome, self.error_code, self.error_message = outcome, code, message
        self._slot = None
        self._wait.done()
        self._flush()  # a final ERROR may still be in this step's outbox
        if self._gate is not None:
            self._gate.settle()
        try:
            self._release(outcome)
        except Exception:
            log.failure("closing the file of {peer} failed", peer=fmt(self.key))
        self.link.close()
        self.record = record(self, time.time(), self._seconds())
        self.host.session_ended(self)
        log_record(self.record)


def record(session: Session[Any], ended_at: float, now: float) -> SessionRecord:
    """``session``'s record, as it ends at ``ended_at`` (wall clock), ``now`` (reactor clock)."""
    req, m, neg, outcome = session.request, session.machine, session.negotiated, session.outcome
    if m is not None:
        counts = (m.bytes, m.bytes_sent, m.packets_sent, m.packets_received, m.retransmits, m.duplicates)
        first = m.first_reply_at
    else:
        # Refused before the transfer started: the one packet sent was the ERROR.
        counts = (0, 0, 1 if outcome is Outcome.SERVER_ERROR else 0, 0, 0, 0)
        first = None
    local_host, local_port = session.transfer_request.local
    return SessionRecord(
        client=session.key[0], client_port=session.key[1], local=local_host, local_port=local_port,
        path=req.filename, mode=req.mode, direction="read" if req.is_read else "write",
        options_requested=dict(req.options),
        options_acknowledged=dict(neg.accepted) if neg is not None else {},
        blksize=m.blksize if m is not None else None,
        windowsize=m.windowsize if m is not None else None,
        tsize=neg.tsize if neg is not None else None,
        started_at=session.started_at, ended_at=ended_at,
        duration=max(0.0, now - session.started_clock),
        time_to_first_packet=None if first is None else max(0.0, first - session.started_clock),
        bytes_transferred=counts[0], bytes_sent=counts[1], packets_sent=counts[2],
        packets_received=counts[3], retransmits=counts[4], duplicates=counts[5],
        outcome=(outcome or Outcome.SERVER_ERROR).value, error_code=session.error_code,
        error_message=session.error_message or "", tsize_probe=bool(m is not None and m.tsize_probe))


def _transfer_request(request: packet.Request, key: Address, local: Local,
                      listening: Address) -> tuple[TransferRequest, errors.TFTPError | None]:
    """What the backend is given, and the refusal of a request no backend may see."""
    refusal: errors.TFTPError | None = None
    try:
        path = normalize(request.filename)
        if request.mode not in MODES:
            refusal = errors.Unsupported("Unsupported transfer mode")
    except errors.TFTPError as e:
        path, refusal = request.filename, e
    return TransferRequest(path=path, client=key, local=(local[0] if local else listening[0], listening[1]),
                           mode=request.mode, options=dict(request.options), write=not request.is_read,
                           raw_path=request.filename), refusal


def _watchdog(cfg: ServerConfig, neg: Negotiated) -> Watchdog:
    """The operator's schedule (or the client's ``timeout``), adaptive when allowed."""
    schedule = cfg.schedule if neg.timeout is None else cfg.schedule.based_on(neg.timeout)
    return Watchdog(schedule, RTOEstimator(cfg.rto_min) if cfg.adaptive and neg.timeout is None else None)
