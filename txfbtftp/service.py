"""An ``IService`` for running txfbtftp inside any Twisted application."""
from __future__ import annotations

import errno
from typing import Any, Callable, List, Optional, Sequence

from twisted.application.service import Service
from twisted.internet.defer import DeferredList

from txfbtftp.config import ServerConfig
from txfbtftp.logs import log
from txfbtftp.server import Session, TFTPProtocol
from txfbtftp.udp import ListeningPort, SessionSockets



class TFTPService(Service):
    """Listens on ``port`` at each of ``interfaces`` and serves ``backend``.

    The default interface ``::`` is dual stack (IPv4 clients arrive mapped
    and are shown in their natural form); on a host without IPv6 it falls
    back to ``0.0.0.0``.
    """

    def __init__(self, backend: Any, reactor: Any, port: int = 69,
                 interfaces: Sequence[str] = ("::",), config: ServerConfig = ServerConfig(),
                 on_session_end: Optional[Callable[[Session], None]] = None) -> None:
        self.backend = backend
        self.reactor = reactor
        self.port = port
        self.interfaces = list(interfaces)
        self.config = config
        self.on_session_end = on_session_end
        self.protocols: List[TFTPProtocol] = []
        self.listening: List[ListeningPort] = []
        self.sockets: Optional[SessionSockets] = None

    def startService(self) -> None:
        super().startService()
        cfg = self.config
        if not cfg.single_port:
            self.sockets = SessionSockets(self.reactor, cfg.busy_poll, cfg.time_slice)
        for iface in self.interfaces:
            proto = TFTPProtocol(self.backend, self.reactor, cfg, self.on_session_end, self.sockets)
            lp = self._listen(proto, iface)
            self.protocols.append(proto)
            self.listening.append(lp)
            log.info("TFTP server listening on {iface} port {port}", iface=iface, port=lp.getHost().port)

    def _listen(self, proto: TFTPProtocol, iface: str) -> ListeningPort:
        lp = ListeningPort(self.port, proto, iface, self.reactor)
        try:
            lp.startListening()
        except OSError as e:
            if iface != "::" or e.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            log.warn("IPv6 unavailable ({err}); listening on 0.0.0.0 instead", err=e)
            lp = ListeningPort(self.port, proto, "0.0.0.0", self.reactor)
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
        for proto in self.protocols:
            proto.stop_sessions()
        if self.sockets is not None:
            self.sockets.shutdown()
            self.sockets = None
        ds = [d for d in (lp.stopListening() for lp in self.listening) if d is not None]
        self.protocols, self.listening = [], []
        return DeferredList(ds)
