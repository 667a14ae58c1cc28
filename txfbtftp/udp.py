"""UDP ports for TFTP: quiet session ports and a listener that knows where
each request was sent.

Why a custom listener: a multi-homed server bound to the wildcard must answer
from the address the client used, or PXE firmware drops the reply.  Twisted's
UDP port does not expose ancillary data, so :class:`ListeningPort` reads with
``recvmsg`` and IP_PKTINFO / IPV6_RECVPKTINFO to learn the destination
address of every request.  (The alternative, one listener per local address,
has to follow addresses as they come and go; the kernel already knows.)
Sessions then bind their own socket to that address, so every later packet
leaves from it; in single-port mode replies carry the address in an
IP_PKTINFO / IPV6_PKTINFO control message instead.
"""
from __future__ import annotations

import errno
import socket
import struct
from typing import Any, Optional, Tuple

from twisted.internet import udp
from twisted.python import log

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
MAX_DATAGRAM = 65536
_CMSG_SPACE = socket.CMSG_SPACE(20) * 2

_READ_IGNORE = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED, errno.EHOSTUNREACH,
                errno.ENETUNREACH, errno.ENOBUFS)


def natural(host: str) -> str:
    """``::ffff:192.0.2.7`` -> ``192.0.2.7``; anything else unchanged."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


class SessionPort(udp.Port):
    """A UDP port that binds and closes without a log line per session."""

    def __init__(self, port: int, proto: Any, interface: str = "", reactor: Any = None,
                 family: Optional[int] = None, scope_id: int = 0) -> None:
        super().__init__(port, proto, interface, MAX_DATAGRAM, reactor)
        if family is not None:
            self.addressFamily = family
        self._scope_id = scope_id

    def _bindSocket(self) -> None:
        skt = self.createInternetSocket()
        try:
            if self.addressFamily == socket.AF_INET6:
                skt.bind((self.interface, self.port, 0, self._scope_id))
            else:
                skt.bind((self.interface, self.port))
        except OSError:
            skt.close()
            raise
        self._realPortNumber = skt.getsockname()[1]
        self.connected = 1
        self.socket = skt
        self.fileno = skt.fileno

    def doRead(self) -> None:
        """One datagram per wake-up.

        In lock-step there is only ever one, and trying for a second would
        cost a failed system call per block; the poller is level-triggered,
        so whatever is left wakes us again.
        """
        try:
            data, addr = self.socket.recvfrom(MAX_DATAGRAM)
        except OSError as e:
            if e.errno in _READ_IGNORE:
                return
            raise
        try:
            self.protocol.datagramReceived(data, addr)
        except Exception:
            log.err(None, "error handling a datagram from %r" % (addr,))

    def connectionLost(self, reason: Any = None) -> None:
        self._realPortNumber = None
        self.maxThroughput = 0
        base = udp.base.BasePort
        base.connectionLost(self, reason)
        self.protocol.doStop()
        self.socket.close()
        del self.socket
        del self.fileno
        if hasattr(self, "d"):
            self.d.callback(None)
            del self.d


class ListeningPort(SessionPort):
    """The well-known port: delivers ``(data, peer, local)`` to the protocol.

    ``peer`` keeps the full socket address (with an IPv6 scope id);
    ``local`` is ``(host, interface index)`` of the address the datagram was
    sent to, or None if the kernel did not say.
    """

    def __init__(self, port: int, proto: Any, interface: str = "::", reactor: Any = None,
                 reuse_port: bool = False) -> None:
        super().__init__(port, proto, interface, reactor)
        self._reuse_port = reuse_port

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        if self._reuse_port:
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if self.addressFamily == socket.AF_INET6:
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            skt.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        try:
            skt.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        except OSError:
            pass
        return skt

    def doRead(self) -> None:
        recvmsg = self.socket.recvmsg
        deliver = self.protocol.packetReceived
        for _ in range(256):
            try:
                data, anc, _flags, addr = recvmsg(MAX_DATAGRAM, _CMSG_SPACE)
            except OSError as e:
                if e.errno in _READ_IGNORE:
                    return
                raise
            try:
                deliver(data, addr, _destination(anc))
            except Exception:
                log.err(None, "error handling a datagram from %r" % (addr,))

    def send_from(self, data: bytes, addr: Tuple, local: Optional[Tuple[str, int]]) -> None:
        """Send ``data`` to ``addr`` from the local address ``local``."""
        if local is None:
            self.socket.sendto(data, addr)
            return
        local, _ = local
        if self.addressFamily == socket.AF_INET6:
            if "." in local:
                local = "::ffff:" + local
            info = socket.inet_pton(socket.AF_INET6, local) + struct.pack("@I", 0)
            anc = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, info)]
        else:
            info = struct.pack("@i", 0) + socket.inet_aton(local) + b"\0\0\0\0"
            anc = [(socket.IPPROTO_IP, IP_PKTINFO, info)]
        self.socket.sendmsg([data], anc, 0, addr)


def _destination(ancillary: list) -> Optional[Tuple[str, int]]:
    for level, kind, payload in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= 12:
            return socket.inet_ntoa(payload[8:12]), struct.unpack("@i", payload[:4])[0]
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(payload) >= 20:
            host = natural(socket.inet_ntop(socket.AF_INET6, payload[:16]))
            return host, struct.unpack("@I", payload[16:20])[0]
    return None


class PortRange:
    """Hands out session ports from ``low..high``, round robin.

    Ports held by this process are skipped without a system call; ports
    other programs hold are found by a failing bind.
    """

    def __init__(self, low: int, high: int) -> None:
        if not 0 < low <= high <= 65535:
            raise ValueError("port range must be within 1..65535, low <= high")
        self.low, self.high = low, high
        self._next = low
        self.in_use: set = set()

    def candidates(self):
        size = self.high - self.low + 1
        for _ in range(size):
            port = self._next
            self._next = self.low if port >= self.high else port + 1
            if port not in self.in_use:
                yield port
