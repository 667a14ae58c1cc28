"""UDP for TFTP: a listener that knows where each request was sent, and
the session sockets behind one poller.

Why a custom listener: a multi-homed server bound to the wildcard must answer
from the address the client used, or PXE firmware drops the reply.  Twisted's
UDP port does not expose ancillary data, so :class:`ListeningPort` reads with
``recvmsg`` and IP_PKTINFO / IPV6_RECVPKTINFO to learn the destination
address of every request.  (The alternative, one listener per local address,
has to follow addresses as they come and go; the kernel already knows.)
Sessions then bind their own socket to that address, so every later packet
leaves from it; in single-port mode replies carry the address in an
IP_PKTINFO / IPV6_PKTINFO control message instead.

Why :class:`SessionSockets`: every session has its own socket (a new transfer
ID, as RFC 1350 wants), and in lock-step each block is one wake-up.  Letting
the reactor dispatch each socket costs more Python than the transfer itself,
so all session sockets sit behind one inner epoll that the reactor sees as a
single reader.  When traffic is flowing it keeps polling for a short, bounded
while (``busy_poll``) before handing control back, so the next ACK of a fast
client is read without a round trip through the reactor and without the
latency of waking a sleeping process; ``time_slice`` bounds how long other
events can wait.
"""
from __future__ import annotations

import errno
import select
import socket
import struct
import time
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

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


class ListeningPort(udp.Port):
    """The well-known port: delivers ``(data, peer, local)`` to the protocol.

    ``peer`` keeps the full socket address (with an IPv6 scope id);
    ``local`` is ``(host, interface index)`` of the address the datagram was
    sent to, or None if the kernel did not say.
    """

    def __init__(self, port: int, proto: Any, interface: str = "::", reactor: Any = None,
                 reuse_port: bool = False) -> None:
        super().__init__(port, proto, interface, MAX_DATAGRAM, reactor)
        self._reuse_port = reuse_port

    #: Room for a rack's worth of simultaneous requests (a boot storm).
    RECEIVE_BUFFER = 8 << 20

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        _set_receive_buffer(skt, self.RECEIVE_BUFFER)
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
                log.err(None, "error handling a datagram from %r" % (addr,))

    def send_from(self, data: bytes, addr: Tuple, local: Optional[Tuple[str, int]]) -> None:
        """Send ``data`` to ``addr`` from the local address ``local``.

        ``addr`` may name an IPv4 peer in natural form; a dual-stack socket
        only reaches it by its mapped address.
        """
        if self.addressFamily == socket.AF_INET6 and ":" not in addr[0]:
            addr = ("::ffff:" + addr[0], addr[1], 0, 0)
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


def _set_receive_buffer(skt: socket.socket, size: int) -> None:
    """As large as allowed: SO_RCVBUFFORCE passes rmem_max when privileged."""
    for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
        try:
            skt.setsockopt(socket.SOL_SOCKET, option, size)
            return
        except OSError:
            continue


def _destination(ancillary: list) -> Optional[Tuple[str, int]]:
    for level, kind, payload in ancillary:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= 12:
            return socket.inet_ntoa(payload[8:12]), struct.unpack("@i", payload[:4])[0]
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(payload) >= 20:
            host = natural(socket.inet_ntop(socket.AF_INET6, payload[:16]))
            return host, struct.unpack("@I", payload[16:20])[0]
    return None


Handler = Callable[[bytes, Tuple], None]

UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_GSO_MAX_SEGMENTS = 64
_GSO_MAX_BYTES = 65000
_gso = {"ok": True}
_SEGMENT_SIZE: Dict[int, list] = {}


def send_batch(sock: socket.socket, dest: Tuple, packets: list) -> None:
    """Send ``packets`` to ``dest`` in order, best effort.

    A window's DATA packets all have the same size but for a shorter last
    one, which is exactly what UDP segmentation offload (Linux 4.18+) takes:
    one ``sendmsg`` of the packets back to back with a UDP_SEGMENT size, and
    the kernel cuts them apart.  A window then costs one system call instead
    of one per block.  Where the kernel refuses, packets go one by one.
    """
    n = len(packets)
    i = 0
    while i < n:
        first = packets[i]
        size = len(first)
        j = i + 1
        if _gso["ok"]:
            most = min(n, i + _GSO_MAX_SEGMENTS, i + max(1, _GSO_MAX_BYTES // size))
            while j < most and len(packets[j]) == size:
                j += 1
            if j < most and len(packets[j]) < size:
                j += 1  # a shorter packet may end a run
        try:
            if j - i == 1:
                sock.sendto(first, dest)
            else:
                anc = _SEGMENT_SIZE.get(size)
                if anc is None:
                    anc = _SEGMENT_SIZE[size] = [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
                sock.sendmsg([b"".join(packets[i:j])], anc, 0, dest)
        except OSError as e:
            if j - i > 1 and e.errno in (errno.EINVAL, errno.ENOPROTOOPT, errno.EIO, errno.EOPNOTSUPP):
                _gso["ok"] = False  # no offload here: one by one from now on
                continue
            # a full buffer is a lost packet; the watchdog resends
        i = j


class SessionSockets:
    """Session sockets multiplexed behind one reactor reader (Linux epoll)."""

    def __init__(self, reactor: Any, busy_poll: float = 0.0002, time_slice: float = 0.005) -> None:
        self.reactor = reactor
        self.busy_poll = busy_poll
        self.time_slice = time_slice
        self._ep = select.epoll()
        self._handlers: Dict[int, Tuple[Optional[socket.socket], Any]] = {}
        reactor.addReader(self)

    def watch(self, reader: Any) -> None:
        """Also serve ``reader`` (a listening port) from inside the loop, so
        new requests are not kept waiting while sessions stream."""
        fd = reader.fileno()
        self._handlers[fd] = (None, reader.doRead)
        self._ep.register(fd, select.EPOLLIN)

    def unwatch(self, reader: Any) -> None:
        fd = reader.fileno()
        if self._handlers.pop(fd, None) is not None:
            self._ep.unregister(fd)


    def open(self, family: int, host: str, ports: Iterable[int], handler: Handler,
             scope_id: int = 0) -> Tuple[socket.socket, int]:
        """A non-blocking socket bound to ``host`` and the first free of ``ports``.

        Raises OSError (EADDRINUSE when every port was taken).
        """
        err: Optional[OSError] = None
        for port in ports:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind((host, port, 0, scope_id) if family == socket.AF_INET6 else (host, port))
            except OSError as e:
                sock.close()
                if e.errno != errno.EADDRINUSE:
                    raise
                err = e
                continue
            fd = sock.fileno()
            try:
                self._ep.register(fd, select.EPOLLIN)
            except (OSError, ValueError):
                sock.close()
                raise
            self._handlers[fd] = (sock, handler)
            return sock, sock.getsockname()[1]
        raise err or OSError(errno.EADDRINUSE, "no free port")

    def close(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd >= 0 and self._handlers.pop(fd, None) is not None:
            self._ep.unregister(fd)
        sock.close()

    def fileno(self) -> int:
        return self._ep.fileno()

    def logPrefix(self) -> str:
        return "txfbtftp-sessions"

    def doRead(self) -> None:
        poll = self._ep.poll
        handlers = self._handlers
        clock = time.monotonic
        start = last = clock()
        end = start + self.time_slice
        idle = self.busy_poll
        while True:
            events = poll(0)
            if events:
                for fd, _ in events:
                    entry = handlers.get(fd)
                    if entry is None:
                        continue
                    sock = entry[0]
                    if sock is None:
                        try:
                            entry[1]()  # a listening port
                        except Exception:
                            log.err(None, "error reading a listening port")
                        continue
                    try:
                        data, addr = sock.recvfrom(MAX_DATAGRAM)
                    except OSError:
                        continue  # EAGAIN, or an ICMP error queued on the socket
                    try:
                        entry[1](data, addr)
                    except Exception:
                        log.err(None, "error handling a datagram from %r" % (addr,))
                last = now = clock()
            else:
                now = clock()
                if now - last >= idle:
                    return
            if now >= end:
                return

    def connectionLost(self, reason: Any = None) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        self.reactor.removeReader(self)
        for sock, _ in list(self._handlers.values()):
            if sock is not None:
                self.close(sock)
        self._handlers.clear()
        self._ep.close()


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
