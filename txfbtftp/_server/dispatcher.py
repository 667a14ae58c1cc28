"""The listening protocol: requests in, sessions out.

:class:`TFTPProtocol` receives every datagram sent to the listening port.  A
request is admitted (or queued, or refused as busy) and becomes a
:class:`~txfbtftp._server.read.ReadSession` or
:class:`~txfbtftp._server.write.WriteSession` in the table of sessions,
keyed by the client's address and port.  What is not a request is either
routed to its session (``--single-port``, where every packet arrives here)
or answered with ERROR 4.  The protocol is also each session's host: it
opens the session's link (its own socket, or the listening port itself), and
accounts for the session when it ends.
"""
from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol

from txfbtftp._interfaces import Address, IBackend
from txfbtftp._net.address import natural
from txfbtftp._net.links import Link, ListenerLink, SocketLink
from txfbtftp._net.listener import Local, ListeningPort
from txfbtftp._net.poller import SessionSockets
from txfbtftp._net.ports import PortRange
from txfbtftp._observe.logs import LogLimiter, fmt, log
from txfbtftp._observe.stats import ServerStats
from txfbtftp._protocol import packet
from txfbtftp._server.access import AccessRules
from txfbtftp._server.admission import Admission, Verdict
from txfbtftp._buckets import Buckets
from txfbtftp._server.buckets import UnverifiedBudget
from txfbtftp._server.config import ServerConfig
from txfbtftp._server.read import ReadSession
from txfbtftp._server.recent import RecentlyEnded
from txfbtftp._server.session import Session
from txfbtftp._server.timers import Wheel
from txfbtftp._server.write import WriteSession
from txfbtftp._types import IServerReactor

BUSY = "Server busy, try again later"
#: ERRORs the listening port sends one address: a second, and at once.
ERRORS_PER_SECOND, ERRORS_BURST = 2.0, 10.0
#: Lines about bad or stray packets, from all addresses together (ten times as many at once).
LOG_LINES_PER_SECOND = 10.0
AnySession = ReadSession | WriteSession


class TFTPProtocol(DatagramProtocol):
    """Serves TFTP from ``backend`` on one listening port.

    Works under a plain ``listenUDP`` too (replies then cannot choose their
    source address); :class:`~txfbtftp.TFTPService` listens with
    :class:`~txfbtftp._net.listener.ListeningPort`.  Several protocols (one
    per interface) may share ``sockets``, ``stats`` and ``admission``.
    """

    noisy = False

    def __init__(self, backend: IBackend, reactor: IServerReactor, config: ServerConfig = ServerConfig(),
                 sockets: SessionSockets | None = None, stats: ServerStats | None = None,
                 admission: Admission | None = None, access: AccessRules | None = None,
                 budget: UnverifiedBudget | None = None) -> None:
        self.backend = backend
        self.clock: IReactorTime = reactor
        self.config = config
        self.stats = stats if stats is not None else ServerStats(clock=reactor.seconds)
        self._reactor = reactor
        self._sockets = sockets
        #: Sessions in progress, by the client's address and port.
        self.sessions: dict[Address, AnySession] = {}
        self.ports = PortRange(*config.port_range) if config.port_range else None
        self.wheel = Wheel(reactor)
        self.admission = admission if admission is not None else Admission(
            _capacity(config), config.max_queue, config.max_sessions_per_client, config.max_queue_wait)
        #: Who may ask (an empty set of rules lets everyone).
        self.access = access if access is not None else AccessRules()
        self.budget = budget if budget is not None else UnverifiedBudget(
            reactor.seconds, config.max_unverified_per_source, config.unverified_bytes_per_second,
            _burst(config))
        #: The server is stopping: requests are dropped (see txfbtftp._server.drain).
        self.draining = False
        self._log_limiter = LogLimiter(reactor.seconds, rate=LOG_LINES_PER_SECOND)
        self._errors = Buckets(reactor.seconds, ERRORS_PER_SECOND, ERRORS_BURST)
        self._ended = RecentlyEnded(reactor.seconds, config.schedule.total)

    # Twisted calls this under listenUDP; ListeningPort calls packetReceived.
    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.packetReceived(datagram, addr, None)

    def packetReceived(self, data: bytes, addr: tuple[Any, ...], local: Local, age: float = 0.0) -> None:
        """A datagram to the listening port, sent to ``local``, that waited
        ``age`` seconds in the socket's queue."""
        key = (natural(addr[0]), addr[1])
        op = packet.opcode_of(data)
        if op == packet.RRQ or op == packet.WRQ:
            if self.draining:
                self.stats.increment_counter("requests_dropped_stopping")
                return
            self._request(data, addr, key, local, self.clock.seconds() - age)
            return
        if self.config.single_port:
            session = self.sessions.get(key)
            if session is not None:
                session.receive(data)
                return
            if self._ended.seen(key):
                return  # a late ACK or a repeated last DATA: the client is done, so are we
        if op == packet.ERROR:
            return
        self._note_bad(key, "unexpected packet (opcode %s) on the listening port" % op)
        if self.access.permits(key[0]):
            self.reply_error(addr, local, packet.ERR_ILLEGAL, packet.MESSAGES[packet.ERR_ILLEGAL])

    def _request(self, data: bytes, addr: tuple[Any, ...], key: Address, local: Local, arrived: float) -> None:
        if not self.access.permits(key[0], packet.opcode_of(data) == packet.WRQ):
            self._quietly(key, "requests_denied", "request denied by the access rules")
            return
        try:
            req = packet.parse_request(data)
        except packet.MalformedPacket as e:
            self._note_bad(key, "malformed request: %s" % e)
            self.reply_error(addr, local, packet.ERR_ILLEGAL, packet.MESSAGES[packet.ERR_ILLEGAL])
            return
        existing = self.sessions.get(key)
        if existing is not None:
            if existing.request.raw == data and arrived <= existing.last_heard_at:
                # The client's repeat (it lost our first packet: the session
                # answers again) or a copy sent before its latest word.
                existing.repeat()
                return
            existing.abandon("client sent a new request")
        elif self._ended.stale(key, data, arrived):
            return  # a copy that waited in the queue while its session ran to its end
        # A queued request counts as an unverified session: one address must
        # not fill the queue that everyone shares.  (A repeat keeps its place.)
        host = key[0]
        if not self.admission.waits(key) and not self.budget.admit(host, self.admission.waiting(host)):
            self._quietly(key, "requests_over_budget", "too many requests that were never answered")
            return
        verdict = self.admission.offer(key, lambda: self._start(req, addr, key, local), self.clock.seconds())
        if verdict is Verdict.BUSY:
            self.stats.increment_counter("requests_refused_busy")
            self.reply_error(addr, local, packet.ERR_UNDEFINED, BUSY)
        elif verdict is Verdict.QUEUED:
            self.stats.increment_counter("requests_queued")

    def _start(self, req: packet.Request, addr: tuple[Any, ...], key: Address, local: Local) -> None:
        sock = None
        if not self.config.single_port:
            sock = self._bind(key, local)
            if sock is None:
                self._wait_for_port(req, addr, key, local)
                return
        cls = ReadSession if req.is_read else WriteSession
        session = self.sessions[key] = cls(self, req, addr, key, local, self._listening())
        self.stats.session_started()
        session.begin(self._link(session, sock))

    def _wait_for_port(self, req: packet.Request, addr: tuple[Any, ...], key: Address, local: Local) -> None:
        """No session port is free: wait first in line for one of ours to end,
        or, when none will, refuse."""
        if self.admission.put_back(key, lambda: self._start(req, addr, key, local), self.clock.seconds()):
            self.stats.increment_counter("requests_waiting_for_port")
        else:
            self.stats.increment_counter("requests_refused_busy")
            self.reply_error(addr, local, packet.ERR_UNDEFINED, BUSY)

    def _listening(self) -> Address:
        transport = self.transport
        if transport is None:
            return ("", 0)
        return (getattr(transport, "interface", ""), transport.getHost().port)

    def _quietly(self, key: Address, counter: str, what: str) -> None:
        """Refuse without a word (a reply helps scanners and reflectors)."""
        self.stats.increment_counter(counter)
        self._log(key, what)

    def _note_bad(self, key: Address, what: str) -> None:
        self.stats.increment_counter("malformed_packets")
        self._log(key, what)

    def _log(self, key: Address, what: str) -> None:
        limiter = self._log_limiter
        if limiter.allow(key[0]):
            dropped = limiter.take_dropped()
            if dropped:
                log.info("{n} lines about packets from other hosts not logged (over {rate:g} a second)",
                         n=dropped, rate=limiter.rate)
            n = limiter.suppressed.pop(key[0], 0)
            log.info("{peer}: {what} ({suppressed} more from this host not logged)" if n else "{peer}: {what}",
                     peer=fmt(key), what=what, suppressed=n)

    def reply_error(self, addr: tuple[Any, ...], local: Local, code: int, message: str) -> None:
        """An ERROR from the listening port (nobody else can send it), at most
        a few a second to one address: the first always goes."""
        if self._errors.take(natural(addr[0])):
            self.send_from(packet.error(code, message), addr, local)
        else:
            self.stats.increment_counter("errors_suppressed")

    def _stranger(self, addr: tuple[Any, ...]) -> bool:
        """A datagram at a session's port from someone else: logged, and
        answered (ERROR 5) within the same budget as the listening port's
        ERRORs."""
        host = natural(addr[0])
        self._log((host, addr[1]), "a datagram for another client's transfer")
        if self._errors.take(host):
            return True
        self.stats.increment_counter("errors_suppressed")
        return False

    def send_from(self, data: bytes, addr: tuple[Any, ...], local: Local) -> None:
        """Send from the listening port, from the address the client used."""
        transport = self.transport
        try:
            if isinstance(transport, ListeningPort):
                transport.send_from(data, addr, local)
            elif transport is not None:
                transport.write(data, addr)
        except OSError:
            pass  # a full buffer is a lost packet

    # -- the sessions' host ---------------------------------------------------------
    @property
    def sockets(self) -> SessionSockets:
        """The poller of session sockets, made on first use."""
        if self._sockets is None:
            cfg = self.config
            self._sockets = SessionSockets(self._reactor, cfg.busy_poll, cfg.time_slice, timers=self.clock)
        return self._sockets

    def _link(self, session: Session[Any], sock: socket.socket | None) -> Link:
        if sock is None:
            return ListenerLink(self.send_from, session.peer, session.local)
        link = SocketLink(self.sockets, sock, session.peer, session.receive, self._stranger)
        if self.ports is not None and link.port is not None:
            self.ports.in_use.add(link.port)
        return link

    def _bind(self, key: Address, local: Local) -> socket.socket | None:
        """A socket bound to the address the client used, on a free port."""
        host = local[0] if local else None
        if host is None:
            iface = getattr(self.transport, "interface", "") if self.transport else ""
            host = iface if iface not in ("", "::", "0.0.0.0") else None
        v6 = ":" in (host or key[0])
        family = socket.AF_INET6 if v6 else socket.AF_INET
        bind_host = host or ("::" if v6 else "0.0.0.0")
        scope = local[1] if (local and host and host.startswith("fe80")) else 0
        candidates = self.ports.candidates() if self.ports is not None else (0,)
        try:
            return self.sockets.bind(family, bind_host, candidates, scope)
        except OSError as e:
            if e.errno != errno.EADDRINUSE and self._log_limiter.allow("session sockets"):
                log.warn("cannot open a session socket on {host}: {err}", host=bind_host, err=e)
            return None

    def session_ended(self, session: Session[Any]) -> None:
        now = self.clock.seconds()
        try:
            if self.sessions.get(session.key) is session:
                del self.sessions[session.key]
            self._ended.add(session.key, session.request.raw)
            if self.ports is not None and session.link.port is not None:
                self.ports.in_use.discard(session.link.port)
            if session.record is not None:
                self.stats.session_ended(session.record)
        finally:
            self.admission.release(session.key[0], now)

    def stop_sessions(self) -> None:
        """End every session without a word, forget the queue, stop the timers."""
        self.admission.clear()
        for session in list(self.sessions.values()):
            session.abandon("server stopping")
        self.wheel.stop()


def _burst(config: ServerConfig) -> int:
    """What an unverified address may be sent at once: a second's worth, and
    never less than the largest first packet or window the limits allow
    (with its headers), or a rate below it would start nobody."""
    limits = config.limits
    largest = max(limits.max_window_bytes, limits.max_blksize) + 4 * limits.max_windowsize
    return max(config.unverified_bytes_per_second, largest)


def _capacity(config: ServerConfig) -> int:
    """Active sessions at most: ``--max-sessions``, and no more than the
    port range has ports (the others wait in the queue for a port)."""
    if config.port_range is None or config.single_port:
        return config.max_sessions
    low, high = config.port_range
    size = high - low + 1
    return min(config.max_sessions, size) if config.max_sessions else size
