"""``TFTPService``: txfbtftp as one ``IService`` inside any Twisted application.

The service binds its listening ports in ``privilegedStartService`` (port 69
needs root, or CAP_NET_BIND_SERVICE), or serves sockets bound already (by
systemd, or by a supervisor); it starts its backend in ``startService``,
which ``twistd`` calls after dropping privileges and chrooting: files the
backend creates belong to the user that serves them.  Stopping drains
(:mod:`txfbtftp._server.drain`), then closes everything and stops the
backend, so no connection, timer or thread outlives the service.
"""
from __future__ import annotations

import errno
import resource
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed

from txfbtftp._interfaces import Address, IBackend, ICounting, ILifecycle
from txfbtftp._lifecycle import reload_all
from txfbtftp._net.listener import ListeningPort
from txfbtftp._net.poller import SessionSockets
from txfbtftp._observe.logs import log
from txfbtftp._observe.metrics import Metrics, as_metrics
from txfbtftp._observe.records import SessionRecord
from txfbtftp._observe.stats import ServerStats
from txfbtftp._server.access import AccessRules
from txfbtftp._server.admission import Admission
from txfbtftp._server.config import ServerConfig
from txfbtftp._server.dispatcher import AnySession, TFTPProtocol
from txfbtftp._server.drain import Drain
from txfbtftp._types import IServerReactor


def raise_fd_limit() -> int:
    """Every session holds a socket: lift the soft open-file limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            pass
    return soft


class TFTPService(Service):
    """Listens on ``port`` at each of ``interfaces`` and serves ``backend``.

    The default interface ``::`` is dual stack (IPv4 clients arrive mapped
    and are shown in their natural form); on a host without IPv6 it falls
    back to ``0.0.0.0``.  ``listeners`` are sockets bound already (systemd's,
    or a supervisor's), served instead.  ``session_stats_callback(record)``
    runs as each session ends, ``server_stats_callback(stats)`` every
    ``stats_interval`` seconds; ``metrics`` is a prometheus_client
    ``CollectorRegistry`` to register in, or a :class:`~txfbtftp.Metrics`.
    """

    def __init__(self, backend: IBackend, reactor: IServerReactor, port: int = 69,
                 interfaces: Sequence[str] = ("::",), config: ServerConfig = ServerConfig(),
                 session_stats_callback: Callable[[SessionRecord], Any] | None = None,
                 server_stats_callback: Callable[[ServerStats], Any] | None = None,
                 stats_interval: float = 60.0,
                 metrics: Metrics | CollectorRegistry | None = None,
                 listeners: Sequence[socket.socket] = (), access: AccessRules | None = None) -> None:
        self.backend = backend
        self.reactor = reactor
        self.port = port
        self.interfaces = list(interfaces)
        self.config = config
        self.listeners = list(listeners)
        #: Who may ask; its file (if any) is re-read by :meth:`reload`.
        self.access = access if access is not None else AccessRules()
        self.protocols: list[TFTPProtocol] = []
        self.listening: list[ListeningPort] = []
        self.sockets: SessionSockets | None = None
        self.admission: Admission | None = None
        #: Every interface's counters; they outlive a restart.
        self.stats = ServerStats(",".join(self.interfaces), stats_interval, reactor.seconds)
        if session_stats_callback is not None:
            self.stats.session_listeners.append(session_stats_callback)
        self.server_stats_callback = server_stats_callback
        self.metrics = as_metrics(metrics) if metrics is not None else None
        if self.metrics is not None:
            self.metrics.attach(self.stats)
        if ICounting.providedBy(backend):
            backend.count_with(self.stats.increment_counter)
        self._backend_started = False
        self._drain: Drain | None = None
        self._hurry = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._bind()

    def startService(self) -> None:
        if self._drain is not None:
            # Its end would release what this start binds.
            raise RuntimeError("TFTPService started again before its stop finished: wait for the Deferred "
                               "that stopService returned")
        if not self.listening:
            self._bind()  # started without privilegedStartService, as embedders and tests do
        super().startService()
        raise_fd_limit()
        if not self._backend_started:
            self.access.start()
            if ILifecycle.providedBy(self.backend):
                self.backend.start()
            self._backend_started = True
        if self.server_stats_callback is not None and self.stats.interval:
            self.stats.start_reporting(self.reactor, self.server_stats_callback)

    def _bind(self) -> None:
        places: list[tuple[str, socket.socket | None]] = [("", s) for s in self.listeners]
        places = places or [(iface, None) for iface in self.interfaces]
        for iface, sock in places:
            # The first protocol builds the admission queue and the session
            # sockets from the config; the others share them.
            proto = TFTPProtocol(self.backend, self.reactor, self.config, self.sockets, self.stats, self.admission,
                                 self.access, self.protocols[0].budget if self.protocols else None)
            self.admission = proto.admission
            lp = self._listen(proto, iface, sock)
            if not self.config.single_port:
                self.sockets = proto.sockets
                self.sockets.watch(lp)
            self.protocols.append(proto)
            self.listening.append(lp)
            host = lp.getHost()
            log.info("TFTP server listening on {iface} port {port}", iface=host.host, port=host.port)

    def _listen(self, proto: TFTPProtocol, iface: str, sock: socket.socket | None) -> ListeningPort:
        lp = ListeningPort(self.port, proto, iface, self.reactor, self.config.reuse_port, sock)
        try:
            lp.startListening()
        except OSError as e:
            cause = getattr(e, "socketError", e)
            if sock is not None or iface != "::" or cause.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            log.warn("IPv6 unavailable ({err}); listening on 0.0.0.0 instead", err=cause)
            lp = ListeningPort(self.port, proto, "0.0.0.0", self.reactor, self.config.reuse_port)
            lp.startListening()
        return lp

    @property
    def bound_port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        return int(self.listening[0].getHost().port)

    @property
    def bound_addresses(self) -> list[Address]:
        """``(host, port)`` of every listening port."""
        return [(lp.getHost().host, lp.getHost().port) for lp in self.listening]

    @property
    def sessions(self) -> dict[Address, AnySession]:
        """The sessions in progress, by client address and port."""
        out: dict[Address, AnySession] = {}
        for proto in self.protocols:
            out.update(proto.sessions)
        return out

    def _all_sessions(self) -> Iterator[AnySession]:
        for proto in self.protocols:
            yield from proto.sessions.values()

    def reload(self) -> list[str]:
        """Re-read what can be re-read: the access rules' file, and what the
        backend can (remap rules, ``.clients``, ...).

        Returns what was reloaded, one description each.  A configuration
        that is invalid keeps the old one: the ValueError propagates.
        """
        return reload_all([self.access, self.backend])

    def stopService(self) -> Deferred[None]:
        """Drain (at most ``config.shutdown_grace`` seconds), then release everything."""
        if self._drain is not None:
            return self._drain.done
        super().stopService()
        self.stats.stop_reporting()
        for proto in self.protocols:
            proto.draining = True
        waits: list[Deferred[Any]] = []
        if not self.config.single_port:
            waits = self._close_listeners()  # a restarted server can bind while transfers finish
        grace = 0.0 if self._hurry else self.config.shutdown_grace
        drain = self._drain = Drain(self.reactor, self._all_sessions, grace)
        d = drain.start()
        d.addCallback(lambda _: self._release(waits))
        return d

    def stop_now(self) -> None:
        """While stopping (or about to: the stop may still be on its way
        through the reactor): end the transfers still running without waiting."""
        self._hurry = True
        if self._drain is not None:
            self._drain.now()

    def _close_listeners(self) -> list[Deferred[Any]]:
        listening, self.listening = self.listening, []
        if self.sockets is not None:
            for lp in listening:
                self.sockets.unwatch(lp)
        return [d for d in (lp.stopListening() for lp in listening) if d is not None]

    def _release(self, waits: list[Deferred[Any]]) -> Deferred[None]:
        for proto in self.protocols:
            proto.stop_sessions()
        if self.sockets is not None:
            self.sockets.shutdown()
            self.sockets = None
        waits = waits + self._close_listeners()
        self.protocols, self.admission, self._drain, self._hurry = [], None, None, False
        if ILifecycle.providedBy(self.backend) and self._backend_started:
            self._backend_started = False
            waits.append(maybeDeferred(self.backend.stop))
        if not waits:
            return succeed(None)
        return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)
