"""An ``IService`` for running txfbtftp inside any Twisted application."""
from __future__ import annotations

import errno
import resource
from typing import Any, Callable, List, Optional, Sequence

from twisted.application.service import Service
from twisted.internet.defer import DeferredList

from txfbtftp.admission import Admission
from txfbtftp.config import ServerConfig
from txfbtftp.logs import log
from txfbtftp.server import Session, TFTPProtocol
from txfbtftp.stats import ServerStats, SessionRecord
from txfbtftp.udp import ListeningPort, SessionSockets



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
    back to ``0.0.0.0``.
    """

    def __init__(self, backend: Any, reactor: Any, port: int = 69,
                 interfaces: Sequence[str] = ("::",), config: ServerConfig = ServerConfig(),
                 on_session_end: Optional[Callable[[Session], None]] = None,
                 session_stats_callback: Optional[Callable[[SessionRecord], Any]] = None,
                 server_stats_callback: Optional[Callable[[ServerStats], Any]] = None,
                 stats_interval: float = 60.0, metrics: Any = None) -> None:
        """``session_stats_callback(record)`` runs as each session ends;
        ``server_stats_callback(self.stats)`` every ``stats_interval`` seconds;
        ``metrics`` is a prometheus_client ``CollectorRegistry`` to register in,
        or a :class:`txfbtftp.metrics.Metrics` (to choose path classes).
        """
        self.backend = backend
        self.reactor = reactor
        self.port = port
        self.interfaces = list(interfaces)
        self.config = config
        self.on_session_end = on_session_end
        self.protocols: List[TFTPProtocol] = []
        self.listening: List[ListeningPort] = []
        self.sockets: Optional[SessionSockets] = None
        self.admission: Optional[Admission] = None
        #: Every interface's counters; they outlive a restart.
        self.stats = ServerStats(",".join(self.interfaces), stats_interval, reactor.seconds)
        if session_stats_callback is not None:
            self.stats.session_listeners.append(session_stats_callback)
        self.server_stats_callback = server_stats_callback
        self.metrics = None
        if metrics is not None:
            from txfbtftp.metrics import as_metrics  # prometheus_client only when wanted
            self.metrics = as_metrics(metrics)
            self.metrics.attach(self.stats)

    def startService(self) -> None:
        super().startService()
        raise_fd_limit()
        cfg = self.config
        self.admission = None
        for iface in self.interfaces:
            # The first protocol builds the admission queue and the session
            # sockets from the config; the others share them.
            proto = TFTPProtocol(self.backend, self.reactor, cfg, self.on_session_end, self.sockets, self.stats,
                                 self.admission)
            self.admission = proto.admission
            lp = self._listen(proto, iface)
            if not cfg.single_port:
                self.sockets = proto.sockets
                self.sockets.watch(lp)
            self.protocols.append(proto)
            self.listening.append(lp)
            log.info("TFTP server listening on {iface} port {port}", iface=iface, port=lp.getHost().port)
        if self.server_stats_callback is not None and self.stats.interval:
            self.stats.start_reporting(self.reactor, self.server_stats_callback)

    def _listen(self, proto: TFTPProtocol, iface: str) -> ListeningPort:
        lp = ListeningPort(self.port, proto, iface, self.reactor, self.config.reuse_port)
        try:
            lp.startListening()
        except OSError as e:
            if iface != "::" or e.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            log.warn("IPv6 unavailable ({err}); listening on 0.0.0.0 instead", err=e)
            lp = ListeningPort(self.port, proto, "0.0.0.0", self.reactor, self.config.reuse_port)
            lp.startListening()
        return lp

    @property
    def bound_port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        return self.listening[0].getHost().port

    @property
    def sessions(self) -> dict:
        out: dict = {}
        for proto in self.protocols:
            out.update(proto.sessions)
        return out

    def stopService(self) -> Any:
        super().stopService()
        self.stats.stop_reporting()
        for proto in self.protocols:
            proto.stop_sessions()
        if self.sockets is not None:
            self.sockets.shutdown()
            self.sockets = None
        ds = [d for d in (lp.stopListening() for lp in self.listening) if d is not None]
        self.protocols, self.listening = [], []
        return DeferredList(ds)
