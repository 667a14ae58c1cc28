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
import time
from typing import Any, Protocol

from twisted.internet import udp
from twisted.internet.interfaces import IReactorFDSet

from txfbtftp._net.address import natural
from txfbtftp._observe.logs import log

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
MAX_DATAGRAM = 65536
_CMSG_SPACE = socket.CMSG_SPACE(20) * 2 + socket.CMSG_SPACE(16)

#: ``(host, interface index)`` of the address a datagram was sent to.
Local = tuple[str, int] | None

_READ_IGNORE = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED, errno.EHOSTUNREACH,
                errno.ENETUNREACH, errno.ENOBUFS)


class PacketReceiver(Protocol):
    """What a :class:`ListeningPort` delivers to."""

    def packetReceived(self, data: bytes, addr: tuple[Any, ...], local: Local, age: float = 0.0) -> None: ...


class ListeningPort(udp.Port):
    """Delivers ``(data, peer, local, age)`` to its protocol's ``packetReceived``.

    ``peer`` keeps the full socket address (with an IPv6 scope id);
    ``local`` is ``(host, interface index)`` of the address the datagram was
    sent to, or None if the kernel did not say; ``age`` is how long the
    datagram waited in the socket's queue (SO_TIMESTAMPNS), so that in a
    storm a stale copy of a request can be told from a new one.
    """

    def __init__(self, port: int, proto: Any, interface: str = "::",
                 reactor: IReactorFDSet | None = None, reuse_port: bool = False,
                 sock: socket.socket | None = None) -> None:
        """Bind ``interface``:``port``, or with ``sock``, serve that socket,
        already bound (by systemd, or by the process that supervises this one)."""
        if sock is not None:
            interface, port = sock.getsockname()[:2]
        super().__init__(port, proto, interface, MAX_DATAGRAM, reactor)
        self._reuse_port = reuse_port
        if sock is not None:
            sock.setblocking(False)
            configure(sock)
            self._preexistingSocket = sock  # type: ignore[assignment]  # Twisted's own adoption hook

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        if self._reuse_port:
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if self.addressFamily == socket.AF_INET6:
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        configure(skt)
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
            local, arrived = _ancillary(anc)
            try:
                deliver(data, addr, local, time.time() - arrived if arrived else 0.0)
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


#: Room for a rack's worth of simultaneous requests (a boot storm).
RECEIVE_BUFFER = 8 << 20


def configure(skt: socket.socket) -> None:
    """Ask the kernel for each datagram's destination address and arrival
    time, and for room to queue a storm."""
    set_receive_buffer(skt, RECEIVE_BUFFER)
    options = [(socket.IPPROTO_IP, IP_PKTINFO), (socket.SOL_SOCKET, SO_TIMESTAMPNS)]
    if skt.family == socket.AF_INET6:
        options.append((socket.IPPROTO_IPV6, IPV6_RECVPKTINFO))
    for level, option in options:
        try:
            skt.setsockopt(level, option, 1)
        except OSError:
            pass


def bind_listening_socket(interface: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A configured UDP socket bound to ``interface``:``port`` (``::`` is dual
    stack), as :class:`ListeningPort` makes it; for a supervisor that binds
    its workers' sockets itself.  Raises OSError."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    skt = socket.socket(family, socket.SOCK_DGRAM)
    try:
        skt.setblocking(False)
        if reuse_port:
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        configure(skt)
        skt.bind((interface, port))
    except OSError:
        skt.close()
        raise
    return skt


def set_receive_buffer(skt: socket.socket, size: int) -> None:
    """As large as allowed: SO_RCVBUFFORCE passes rmem_max when privileged."""
    for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
        try:
            skt.setsockopt(socket.SOL_SOCKET, option, size)
            return
        except OSError:
            continue


def _ancillary(ancillary: list[tuple[int, int, bytes]]) -> tuple[Local, float]:
    """The address a datagram was sent to, and when it arrived (0.0: unknown)."""
    local: Local = None
    arrived = 0.0
    for level, kind, payload in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= 12:
            local = socket.inet_ntoa(payload[8:12]), struct.unpack("@i", payload[:4])[0]
        elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(payload) >= 20:
            local = natural(socket.inet_ntop(socket.AF_INET6, payload[:16])), struct.unpack("@I", payload[16:20])[0]
        elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
            sec, nsec = struct.unpack("@qq", payload[:16])
            arrived = sec + nsec * 1e-9
    return local, arrived
