"""The Twisted side: a listening protocol and one driver per session.

:class:`TFTPProtocol` receives requests, keeps the table of sessions keyed by
client address and port, and answers what is not a request.  A
:class:`Session` asks the backend for a reader or writer (the only Deferred
on the way in), negotiates options, and then drives a machine from
:mod:`txfbtftp.session` with datagrams and a slot in the protocol's timer
wheel (:mod:`txfbtftp.timers`).
"""
from __future__ import annotations

import errno
import socket
import time
from collections import OrderedDict, deque
from typing import Any, Callable, Deque, Dict, Optional, Tuple

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from txfbtftp import errors, packet
from txfbtftp.admission import Admission, Verdict
from txfbtftp.config import ServerConfig
from txfbtftp.logs import log
from txfbtftp.interfaces import TransferRequest
from txfbtftp.netascii import NetasciiReader, NetasciiWriter
from txfbtftp.options import negotiate
from txfbtftp.schedule import RTOEstimator, Watchdog
from txfbtftp.session import Outcome, ReadMachine, State, WriteMachine
from txfbtftp.stats import ServerStats
from txfbtftp.timers import Wheel
from txfbtftp.udp import MAX_DATAGRAM, ListeningPort, PortRange, SessionSockets, natural, send_batch


Local = Optional[Tuple[str, int]]
BUSY = "Server busy, try again later"
_MODES = ("octet", "netascii")


class LogLimiter:
    """At most one log line per source per ``interval`` seconds."""

    def __init__(self, clock: Callable[[], float], interval: float = 60.0, size: int = 4096) -> None:
        self._clock = clock
        self.interval = interval
        self._size = size
        self._last: Dict[str, float] = {}
        self.suppressed: Dict[str, int] = {}

    def allow(self, source: str) -> bool:
        now = self._clock()
        last = self._last.get(source)
        if last is not None and now - last < self.interval:
            self.suppressed[source] = self.suppressed.get(source, 0) + 1
            return False
        if len(self._last) >= self._size:
            self._last.clear()
            self.suppressed.clear()
        self._last[source] = now
        return True


class TFTPProtocol(DatagramProtocol):
    """Serves TFTP from ``backend`` on one listening port.

    Works under a plain ``listenUDP`` too (then replies cannot choose their
    source address); :class:`txfbtftp.service.TFTPService` uses
    :class:`txfbtftp.udp.ListeningPort`.
    """

    noisy = False
    #: Single-port mode: how many recently ended sessions are remembered, so
    #: their late packets are dropped instead of answered with ERROR 4.
    recent_limit = 4096

    def __init__(self, backend: Any, reactor: Any, config: ServerConfig = ServerConfig(),
                 on_session_end: Optional[Callable[["Session"], None]] = None,
                 sockets: Optional[SessionSockets] = None, stats: Optional[ServerStats] = None,
                 admission: Optional[Admission] = None) -> None:
        self.backend = backend
        self.stats = stats if stats is not None else ServerStats(clock=reactor.seconds)
        self.reactor = reactor
        self.config = config
        self.on_session_end = on_session_end
        self._sockets = sockets
        self.sessions: Dict[Tuple[str, int], Session] = {}
        self.ports = PortRange(*config.port_range) if config.port_range else None
        self.log_limiter = LogLimiter(reactor.seconds)
        self.wheel = Wheel(reactor)
        self._ended: "OrderedDict[Tuple[str, int], float]" = OrderedDict()
        self.admission = admission if admission is not None else Admission(
            config.max_sessions, config.max_queue, config.max_sessions_per_client, config.max_queue_wait)

    # Twisted calls this under listenUDP; ListeningPort calls packetReceived.
    def datagramReceived(self, data: bytes, addr: Tuple) -> None:
        self.packetReceived(data, addr, None)

    def packetReceived(self, data: bytes, addr: Tuple, local: Local) -> None:
        key = (natural(addr[0]), addr[1])
        op = packet.opcode_of(data)
        if op == packet.RRQ or op == packet.WRQ:
            self._request(data, addr, key, local)
            return
        if self.config.single_port:
            session = self.sessions.get(key)
            if session is not None:
                session.receive(data)
                return
            if self._ended_recently(key):
                return  # a late ACK or a repeated last DATA: the client is done, so are we
        if op == packet.ERROR:
            return
        self._note_bad(key, "unexpected packet (opcode %s) on the listening port" % op)
        self.reply_error(addr, local, packet.ERR_ILLEGAL, packet.MESSAGES[packet.ERR_ILLEGAL])

    def _request(self, data: bytes, addr: Tuple, key: Tuple[str, int], local: Local) -> None:
        try:
            req = packet.parse_request(data)
        except packet.MalformedPacket as e:
            self._note_bad(key, "malformed request: %s" % e)
            self.reply_error(addr, local, packet.ERR_ILLEGAL, packet.MESSAGES[packet.ERR_ILLEGAL])
            return
        existing = self.sessions.get(key)
        if existing is not None:
            if not existing.established and existing.request.raw == data:
                return  # a retransmitted request: the session answers it
            existing.abandon("client sent a new request")
        verdict = self.admission.offer(key, lambda: self._start(req, addr, key, local), self.reactor.seconds())
        if verdict is Verdict.BUSY:
            self.stats.increment_counter("requests_refused_busy")
            self.reply_error(addr, local, packet.ERR_UNDEFINED, BUSY)
        elif verdict is Verdict.QUEUED:
            self.stats.increment_counter("requests_queued")

    def _start(self, req: packet.Request, addr: Tuple, key: Tuple[str, int], local: Local) -> None:
        session = Session(self, req, addr, key, local)
        self.sessions[key] = session
        self.stats.session_started()
        session.begin()

    def _note_bad(self, key: Tuple[str, int], what: str) -> None:
        self.stats.increment_counter("malformed_packets")
        if self.log_limiter.allow(key[0]):
            n = self.log_limiter.suppressed.pop(key[0], 0)
            log.info("{peer}: {what} ({suppressed} more from this host not logged)" if n else "{peer}: {what}",
                     peer=_fmt(key), what=what, suppressed=n)

    def reply_error(self, addr: Tuple, local: Local, code: int, message: str) -> None:
        """An ERROR from the listening port (nobody else can send it)."""
        self._send_from(packet.error(code, message), addr, local)

    def _send_from(self, data: bytes, addr: Tuple, local: Local) -> None:
        transport = self.transport
        if transport is None:
            return
        try:
            if isinstance(transport, ListeningPort):
                transport.send_from(data, addr, local)
            else:
                transport.socket.sendto(data, addr)
        except OSError:
            pass

    def session_ended(self, session: "Session") -> None:
        try:
            self._account(session)
        finally:
            self.admission.release(session.key[0], self.reactor.seconds())

    def _account(self, session: "Session") -> None:
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        if self.config.single_port:
            self._remember_ended(session.key)
        if self.ports is not None and session.port_number is not None:
            self.ports.in_use.discard(session.port_number)
        session.record = self.stats.session_ended(session, self.reactor.seconds())
        if self.on_session_end is not None:
            try:
                self.on_session_end(session)
            except Exception:
                log.failure("session-end callback failed")

    def _remember_ended(self, key: Tuple[str, int]) -> None:
        """For as long as a client may still be retransmitting (the watchdog's
        patience), and for at most ``recent_limit`` clients."""
        ended = self._ended
        now = self.reactor.seconds()
        ended.pop(key, None)
        ended[key] = now + self.config.schedule.total
        while ended and (len(ended) > self.recent_limit or next(iter(ended.values())) <= now):
            ended.popitem(last=False)

    def _ended_recently(self, key: Tuple[str, int]) -> bool:
        expiry = self._ended.get(key)
        if expiry is None:
            return False
        if expiry > self.reactor.seconds():
            return True
        del self._ended[key]
        return False

    def stop_sessions(self) -> None:
        self.admission.clear()
        for session in list(self.sessions.values()):
            session.abandon("server stopping")
        self.wheel.stop()

    @property
    def sockets(self) -> SessionSockets:
        if self._sockets is None:
            cfg = self.config
            self._sockets = SessionSockets(self.reactor, cfg.busy_poll, cfg.time_slice)
        return self._sockets

    def open_socket(self, session: "Session") -> Any:
        """A socket for ``session``, bound to the address the client used."""
        host = session.local[0] if session.local else None
        if host is None:
            iface = getattr(self.transport, "interface", "") if self.transport else ""
            host = iface if iface not in ("", "::", "0.0.0.0") else None
        v6 = ":" in (host or session.key[0])
        family = socket.AF_INET6 if v6 else socket.AF_INET
        bind_host = host or ("::" if v6 else "0.0.0.0")
        scope = session.local[1] if (session.local and host and host.startswith("fe80")) else 0
        candidates = self.ports.candidates() if self.ports is not None else (0,)
        try:
            sock, number = self.sockets.open(family, bind_host, candidates, session.datagramReceived, scope)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                log.warn("cannot open a session socket on {host}: {err}", host=bind_host, err=e)
            return None
        if self.ports is not None:
            self.ports.in_use.add(number)
            session.port_number = number
        return sock


class Session:
    """Drives one transfer: backend in, machine in the middle, socket out."""

    def __init__(self, server: TFTPProtocol, request: packet.Request, addr: Tuple,
                 key: Tuple[str, int], local: Local) -> None:
        self.server = server
        self.request = request
        self.key = key
        self.local = local
        self.reactor = server.reactor
        # Replies go to the natural form of the address on the session's own socket.
        self._dest = addr if ":" in key[0] else key
        self.port_number: Optional[int] = None
        self._sock: Any = None
        self.machine: Any = None
        self.reader: Any = None
        self.writer: Any = None
        self.negotiated: Any = None
        self.started_at = time.time()
        self.started_clock = self.reactor.seconds()
        self.ended_at: Optional[float] = None
        self._slot: Optional[int] = None    # where the session waits in the timer wheel
        self._slot_start = 0.0
        self._pending: Optional[Deferred] = None
        self._stall: Any = None
        self._queue: Deque[bytes] = deque()
        self._batch: Optional[list] = None  # packets of this turn, sent together
        self._closed = False
        #: The session's :class:`txfbtftp.stats.SessionRecord`, once it has ended.
        self.record: Any = None

    # -- the record's view --------------------------------------------------
    @property
    def established(self) -> bool:
        m = self.machine
        return m is not None and m.established

    @property
    def transfer_request(self) -> TransferRequest:
        listener = self.server.transport
        host = self.local[0] if self.local else getattr(listener, "interface", "")
        port = listener.getHost().port if listener is not None else 0
        return TransferRequest(
            path=self.request.filename, client=self.key, local=(natural(host), port),
            mode=self.request.mode, options=dict(self.request.options), write=not self.request.is_read)

    # -- start-up -------------------------------------------------------------
    def begin(self) -> None:
        req = self.request
        srv = self.server
        if srv.config.single_port:
            self._send = self._send_single
        else:
            self._sock = srv.open_socket(self)
            if self._sock is None:
                srv.stats.increment_counter("requests_refused_busy")
                srv.reply_error(self._dest, self.local, packet.ERR_UNDEFINED, BUSY)
                self._close(Outcome.SERVER_ERROR, packet.ERR_UNDEFINED, "no session socket available")
                return
        if req.mode not in _MODES:
            self._refuse(packet.ERR_ILLEGAL, "Unsupported transfer mode")
            return
        backend = srv.backend
        method = backend.get_reader if req.is_read else backend.get_writer
        d = maybeDeferred(method, req.filename, self.transfer_request)
        self._wait_for(d)
        d.addCallbacks(self._opened, self._open_failed)
        d.addErrback(self._crashed)

    def _opened(self, handle: Any) -> None:
        self._done_waiting()
        if self._closed:
            (handle.close if self.request.is_read else handle.abort)()
            return
        req = self.request
        cfg = self.server.config
        now = self.reactor.seconds()
        if req.is_read:
            self.reader = NetasciiReader(handle) if req.mode == "netascii" else handle
            size = self.reader.size
        else:
            self.writer = NetasciiWriter(handle) if req.mode == "netascii" else handle
            size = None
        try:
            neg = self.negotiated = negotiate(req, cfg.limits, size)
        except errors.TFTPError as e:
            self._refuse(e.code, e.message)
            return
        schedule = cfg.schedule if neg.timeout is None else cfg.schedule.based_on(neg.timeout)
        estimator = RTOEstimator(cfg.rto_min) if cfg.adaptive and neg.timeout is None else None
        watchdog = Watchdog(schedule, estimator)
        oack = packet.oack(neg.accepted) if neg.accepted else None
        if req.is_read:
            self.machine = ReadMachine(self._send, watchdog, neg.blksize, neg.windowsize, neg.rollover, oack)
            self._batch = []
            self.machine.start(now)
            self._pump(now)
            self._flush()
        else:
            self.machine = WriteMachine(self._send, watchdog, self._deliver, neg.blksize, neg.windowsize,
                                        neg.rollover, oack, cfg.limits.max_upload_size, cfg.dally)
            self.machine.start(now)
        self._after(now)

    def _open_failed(self, failure: Failure) -> None:
        self._done_waiting()
        if self._closed:
            return
        code, message, expected = errors.to_tftp(failure.value)
        if not expected:
            log.failure("backend failed for {path!r} from {peer}", failure,
                        path=self.request.filename, peer=_fmt(self.key))
        self._refuse(code, message)

    def _crashed(self, failure: Failure) -> None:
        log.failure("session for {peer} crashed", failure, peer=_fmt(self.key))
        if not self._closed:
            self._refuse(packet.ERR_UNDEFINED, packet.MESSAGES[packet.ERR_UNDEFINED])

    def _refuse(self, code: int, message: str) -> None:
        self._send(packet.error(code, message))
        self._close(Outcome.SERVER_ERROR, code, message)

    # -- the data path ----------------------------------------------------------
    def _send(self, pkt: bytes) -> None:
        batch = self._batch
        if batch is not None:
            batch.append(pkt)
            return
        try:
            self._sock.sendto(pkt, self._dest)
        except OSError:
            pass  # a full socket buffer is a lost packet; the watchdog resends

    def _flush(self) -> None:
        """Send what this turn produced: a window in as few system calls as
        the kernel allows (UDP segmentation offload, see txfbtftp.udp)."""
        batch, self._batch = self._batch, None
        if batch:
            send_batch(self._sock, self._dest, batch)

    def _send_single(self, pkt: bytes) -> None:
        self.server._send_from(pkt, self._dest, self.local)

    def datagramReceived(self, data: bytes, addr: Tuple) -> None:
        if addr[1] != self.key[1] or addr[0] != self.key[0]:
            if packet.opcode_of(data) != packet.ERROR:
                try:
                    self._sock.sendto(packet.error(packet.ERR_UNKNOWN_TID, packet.MESSAGES[packet.ERR_UNKNOWN_TID]), addr)
                except OSError:
                    pass
            return
        self.receive(data)

    def receive(self, data: bytes) -> None:
        """A datagram from this session's client."""
        m = self.machine
        if m is None:
            return  # still opening; the client will repeat itself
        now = self.reactor.seconds()
        self._batch = []
        m.receive(data, now)
        if self._pending is None:
            if self.reader is not None:
                self._pump(now)
            elif m.complete and m.state is State.COMMITTING:
                self._commit()
        self._flush()
        self._after(now)

    def _pump(self, now: float) -> None:
        """Fill the window; synchronously while the reader is synchronous."""
        m = self.machine
        read = self.reader.read
        bs = m.blksize
        try:
            wants = m.wants
            while wants > 0:
                data = read(bs)
                if type(data) is not bytes:
                    if isinstance(data, Deferred):
                        box: list = []
                        data.addBoth(box.append)
                        if not box:  # not there yet: continue when it is
                            self._wait_for(data)
                            data.addCallback(lambda _: self._read_done(box[0]))
                            data.addErrback(self._crashed)
                            return
                        data = box[0]  # already fired: no recursion through callbacks
                        if isinstance(data, Failure):
                            self._io_failed(data)
                            return
                    data = bytes(data)
                wants = m.feed(data, now)
        except Exception:
            self._io_failed(Failure())

    def _read_done(self, data: Any) -> None:
        self._done_waiting()
        if self._closed:
            return
        if isinstance(data, Failure):
            self._io_failed(data)
            return
        now = self.reactor.seconds()
        self._batch = []
        self.machine.feed(bytes(data), now)
        self._pump(now)
        self._flush()
        self._after(now)

    def _deliver(self, data: bytes) -> None:
        """Write in order; while a write is pending, later blocks queue up."""
        if self._pending is not None:
            self._queue.append(data)
            return
        try:
            result = self.writer.write(data)
        except Exception:
            self._io_failed(Failure())
            return
        if isinstance(result, Deferred):
            self._wait_for(result)
            result.addCallbacks(self._written, self._io_failed)

    def _written(self, _: Any) -> None:
        self._done_waiting()
        while self._queue and not self._closed:
            self._deliver(self._queue.popleft())
            if self._pending is not None:
                return
        m = self.machine
        if not self._closed and m.complete and m.state is State.COMMITTING:
            self._commit()

    def _commit(self) -> None:
        d = maybeDeferred(self.writer.commit)
        self._wait_for(d)

        def done(_: Any) -> None:
            self._done_waiting()
            if self._closed:
                return
            now = self.reactor.seconds()
            self.machine.committed(now)
            self._after(now)

        d.addCallbacks(done, self._io_failed)
        d.addErrback(self._crashed)

    def _io_failed(self, failure: Failure) -> None:
        self._done_waiting()
        if self._closed:
            return
        code, message, expected = errors.to_tftp(failure.value)
        if not expected:
            log.failure("I/O failed for {path!r} from {peer}", failure,
                        path=self.request.filename, peer=_fmt(self.key))
        self.machine.fail(code, message)
        self._after(self.reactor.seconds())

    def _wait_for(self, d: Deferred) -> None:
        """``d`` (a backend call) must answer within the watchdog's patience."""
        self._pending = d
        if d.called:
            return  # a synchronous answer: nothing to watch
        patience = self.server.config.schedule.total
        if self._stall is not None and self._stall.active():
            self._stall.reset(patience)
        else:
            self._stall = self.reactor.callLater(patience, self._stalled)

    def _done_waiting(self) -> None:
        self._pending = None
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        d = self._pending
        if self._closed or d is None:
            return
        self._pending = None
        log.info("{peer} {path!r}: no answer from the backend in {s:.0f}s", peer=_fmt(self.key),
                 path=self.request.filename, s=self.server.config.schedule.total)
        if self.machine is None:
            self._refuse(packet.ERR_UNDEFINED, "Timed out fetching the file")
        else:
            self.machine.fail(packet.ERR_UNDEFINED, "Timed out fetching the file")
            self._after(self.reactor.seconds())
        d.cancel()

    # -- time and the end -------------------------------------------------------
    def _after(self, now: float) -> None:
        m = self.machine
        if m.state is State.DONE:
            self._close(m.outcome, m.error_code, m.error_message)
            return
        deadline = m.deadline
        if deadline is not None and (self._slot is None or deadline < self._slot_start):
            wheel = self.server.wheel
            self._slot = wheel.arm(self, deadline)
            self._slot_start = wheel.start_of(self._slot)

    def wheel_fired(self, slot: int, now: float) -> None:
        """Our slot in the timer wheel came: is the deadline really here?"""
        if slot != self._slot or self._closed:
            return  # an entry left behind when the deadline moved earlier
        self._slot = None
        m = self.machine
        # The slot ends at or after the deadline; a float's last bit must not
        # send the session round the wheel again.
        if m.deadline is not None and now + 1e-6 >= m.deadline:
            self._drain()
            if self._closed:
                return
            if m.deadline is not None and now + 1e-6 >= m.deadline:
                self._batch = []
                m.timeout(max(now, m.deadline))
                self._flush()
        self._after(now)

    def _drain(self) -> None:
        """Read what already waits in our socket before deciding it was lost.

        Under load the answer is often there, unread: retransmitting then
        only adds work for a busy server.
        """
        sock = self._sock
        if sock is None:
            return
        for _ in range(64):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except OSError:
                return
            self.datagramReceived(data, addr)
            if self._closed:
                return

    def abandon(self, why: str) -> None:
        """End without a word to the client."""
        if self._closed:
            return
        if self.machine is not None:
            self.machine.abandon(why)
            m = self.machine
            self._close(m.outcome, m.error_code, m.error_message)
        else:
            self._close(Outcome.CLIENT_ERROR, None, why)

    def _close(self, outcome: Optional[Outcome], code: Optional[int], message: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.outcome, self.error_code, self.error_message = outcome, code, message
        self.ended_at = time.time()
        self._slot = None
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self._stall = None
        if self._sock is not None:
            self._flush()  # a final ERROR may still be in this turn's batch
        try:
            if self.reader is not None:
                self.reader.close()
            if self.writer is not None and outcome is not Outcome.OK:
                self.writer.abort()
        except Exception:
            log.failure("closing the file of {peer} failed", peer=_fmt(self.key))
        if self._sock is not None:
            self.server.sockets.close(self._sock)
        self.server.session_ended(self)
        _log_end(self)


def _fmt(addr: Tuple[str, int]) -> str:
    host, port = addr[0], addr[1]
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def _log_end(s: Session) -> None:
    r = s.record
    verb = "RRQ" if r.direction == "read" else "WRQ"
    if r.tsize_probe:
        log.info("{peer} {verb} {path!r}: tsize probe (ERROR 8 after OACK)", peer=_fmt(s.key), verb=verb,
                 **r.as_dict())
        return
    result = r.outcome
    if r.error_code is not None:
        result += " %d %s" % (r.error_code, r.error_message)
    elif r.error_message and r.outcome != Outcome.OK.value:
        result += " (%s)" % r.error_message
    log.info("{peer} {verb} {path!r} {mode}: {bytes_transferred} bytes in {duration:.3f}s, {result}",
             peer=_fmt(s.key), verb=verb, result=result, **r.as_dict())
