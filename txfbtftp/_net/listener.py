"""The well-known port, which learns where each request was sent.

A multi-homed server bound to the wildcard must answer from the address the
client used, or PXE firmware drops the reply.  Twisted's UDP port does not
expose ancillary data, so :class:`ListeningPort` reads with ``recvmsg`` and
IP_PKTINFO / IPV6_RECVPKTINFO to learn the destination address of every
request.  (The alternative, one listener per local address, has to follow
addresses as they come and go; the kernel already knows.)  Sessions then
bind their own socket to that address; what the listening port answers
itself carries the address in an IP_PKTINFO / IPV6_PKTINFO control message.
"""
from __future__ import annotations

import errno
import socket
import struct
from typing import Any, Protocol

from twisted.internet import udp
from twisted.internet.interfaces import IReactorFDSet

from txfbtftp._net.address import natural
from txfbtftp._observe.logs import log

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
MAX_DATAGRAM = 65536
_CMSG_SPACE = socket.CMSG_SPACE(20) * 2

#: ``(host, interface index)`` of the address a datagram was sent to.
Local = tuple[str, int] | None

_READ_IGNORE = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED, errno.EHOSTUNREACH,
                errno.ENETUNREACH, errno.ENOBUFS)


class PacketReceiver(Protocol):
    """What a :class:`ListeningPort` delivers to."""

    def packetReceived(self, data: bytes, addr: tuple[Any, ...], local: Local) -> None: ...


class ListeningPort(udp.Port):
    """Delivers ``(data, peer, local)`` to its protocol's ``packetReceived``.

    ``peer`` keeps the full socket address (with an IPv6 scope id);
    ``local`` is ``(host, interface index)`` of the address the datagram was
    sent to, or None if the kernel did not say.
    """

    #: Room for a rack's worth of simultaneous requests (a boot storm).
    RECEIVE_BUFFER = 8 << 20

    def __init__(self, port: int, proto: Any, interface: str = "::",
                 reactor: IReactorFDSet | None = None, reuse_port: bool = False) -> None:
        super().__init__(port, proto, interface, MAX_DATAGRAM, reactor)
        self._reuse_port = reuse_port

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        set_receive_buffer(skt, self.RECEIVE_BUFFER)
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
        for _ in range(64):
            try:
                data, anc, _flags, addr = recvmsg(MAX_DATAGRAM, _CMSG_SPACE)
            except OSError as e:
                if e.errno in _READ_IGNORE:
                    return
                raise
            try:
                deliver(data, addr, _destination(anc))
            except Exception:
                log.failure("error handling a datagram from {addr!r}", addr=addr)

    def send_from(self, data: bytes, addr: tuple[Any, ...], local: Local) -> None:
        """Send ``data`` to ``addr`` from the local address ``local``.

        ``addr`` may name an IPv4 peer in natural form; a dual-stack socket
        only reaches it by its mapped address.
        """
        if self.addressFamily == socket.AF_INET6 and ":" not in addr[0]:
            addr = ("::ffff:" + addr[0], addr[1], 0, 0)
        if local is None:
            self.socket.sendto(data, addr)
            return
        host = local[0]
        anc: list[tuple[int, int, bytes]]
        if self.addressFamily == socket.AF_INET6:
            if "." in host:
                host = "::ffff:" + host
            info = socket.inet_pton(socket.AF_INET6, host) + struct.pack("@I", 0)
            anc = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, info)]
        else:
            info = struct.pack("@i", 0) + socket.inet_aton(host) + b"\0\0\0\0"
            anc = [(socket.IPPROTO_IP, IP_PKTINFO, info)]
        self.socket.sendmsg([data], anc, 0, addr)


def set_receive_buffer(skt: socket.socket, size: int) -> None:
    """As large as allowed: SO_RCVBUFFORCE passes rmem_max when privileged."""
    for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
        try:
            skt.setsockopt(socket.SOL_SOCKET, option, size)
            return
        except OSError:
            continue


def _destination(ancillary: list[tuple[int, int, bytes]]) -> Local:
    for level, kind, payload in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= 12:
            return socket.inet_ntoa(payload[8:12]), struct.unpack("@i", payload[:4])[0]
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(payload) >= 20:
            host = natural(socket.inet_ntop(socket.AF_INET6, payload[:16]))
            return host, struct.unpack("@I", payload[16:20])[0]
    return None
