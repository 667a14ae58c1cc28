"""How a session's packets reach its client, in either port mode.

A session holds a link and does not know which kind it has.  A
:class:`SocketLink` is the classic way: a socket of the session's own, whose
port is the server's transfer ID; datagrams from anyone but the client get
ERROR 5, as far as the host says (a budget per address: anyone can send
them with someone else's address).  A :class:`ListenerLink` sends from the listening port, for
``--single-port``; the listening protocol routes the client's datagrams.
"""
from __future__ import annotations

import socket
from typing import Any, Protocol
from collections.abc import Callable

from txfbtftp._net.address import natural
from txfbtftp._net.listener import MAX_DATAGRAM, Local
from txfbtftp._net.poller import SessionSockets
from txfbtftp._protocol import packet

_UNKNOWN_TID = packet.error(packet.ERR_UNKNOWN_TID, packet.MESSAGES[packet.ERR_UNKNOWN_TID])


class Link(Protocol):
    """The session's end of the network."""

    #: The session port, or None when the session has none of its own.
    port: int | None

    def send(self, packets: list[bytes]) -> None:
        """Send ``packets`` in order, best effort (a full buffer is a loss)."""

    def drain(self) -> None:
        """Deliver what already waits for the session, before a retransmission."""

    def open_lane(self, session: Any, machine: Any, reader: Any) -> bool:
        """Let a compiled lane serve the download's whole-window ACKs, where
        the link can (:mod:`txfbtftp._speedups`); whether it does.  A
        session with a lane is told of its deadline by the link
        (``session.deadline_came(machine, now)``), not by its timer wheel."""

    def keep_deadline(self, deadline: float) -> None:
        """The session with a lane has its deadline at ``deadline`` now."""

    def close(self) -> None:
        """Release the link; nothing is delivered after it."""


class SocketLink:
    """A session socket in a :class:`~txfbtftp._net.poller.SessionSockets`."""

    __slots__ = ("port", "_sock", "_poller", "_host", "_cport", "_dest", "_receive", "_send", "_answer")

    def __init__(self, poller: SessionSockets, sock: socket.socket, peer: tuple[Any, ...],
                 receive: Callable[[bytes], None], answer: Callable[[tuple[Any, ...]], bool]) -> None:
        self.port: int | None = sock.getsockname()[1]
        self._sock = sock
        self._poller = poller
        self._host = natural(peer[0])
        self._cport = peer[1]
        # An IPv4 client of a dual-stack listener is reached in its natural
        # form: the session socket is IPv4.
        self._dest = peer if sock.family == socket.AF_INET6 else (self._host, self._cport)
        self._receive = receive
        #: Whether a stranger at this address gets its ERROR 5.
        self._answer = answer
        self._send = poller.sender.send
        poller.register(sock, self.datagramReceived)

    def datagramReceived(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if addr[1] != self._cport or addr[0] != self._host:
            if packet.opcode_of(data) != packet.ERROR and self._answer(addr):
                try:
                    self._sock.sendto(_UNKNOWN_TID, addr)
                except OSError:
                    pass
            return
        self._receive(data)

    def send(self, packets: list[bytes]) -> None:
        if len(packets) == 1:
            try:
                self._sock.sendto(packets[0], self._dest)
            except OSError:
                pass  # a full socket buffer is a lost packet; the watchdog resends
        else:
            self._send(self._sock, self._dest, packets)

    def open_lane(self, session: Any, machine: Any, reader: Any) -> bool:
        return self._poller.open_lane(self._sock, session, machine, reader, self._dest, self.datagramReceived)

    def keep_deadline(self, deadline: float) -> None:
        self._poller.keep_deadline(self._sock, deadline)

    def drain(self) -> None:
        sock = self._sock
        if self._poller.drain(sock, 64):
            return
        for _ in range(64):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except OSError:
                return  # nothing more, or closed by what we delivered
            self.datagramReceived(data, addr)

    def close(self) -> None:
        self._poller.close(self._sock)


class ListenerLink:
    """Every packet from the listening port, tagged with the address the
    client used (``--single-port``)."""

    __slots__ = ("port", "_send", "_dest", "_local")

    def __init__(self, send_from: Callable[[bytes, tuple[Any, ...], Local], None], peer: tuple[Any, ...],
                 local: Local) -> None:
        self.port: int | None = None
        self._send = send_from
        self._dest = peer
        self._local = local

    def send(self, packets: list[bytes]) -> None:
        for pkt in packets:
            self._send(pkt, self._dest, self._local)

    def drain(self) -> None:
        pass  # the listening port reads for everyone

    def open_lane(self, session: Any, machine: Any, reader: Any) -> bool:
        return False  # the listening port reads for everyone

    def keep_deadline(self, deadline: float) -> None:
        pass  # no lane: the session's wheel keeps it

    def close(self) -> None:
        pass
