"""Test doubles for applications that embed txfbtftp, as ``treq.testing`` is for treq.

:class:`MemoryServer` runs the real server (the listening protocol, the
sessions, the machines) against your backend, on a
:class:`~twisted.internet.task.Clock`, with a client made of the same
machines, the two connected in memory: no socket, no real time, no sleep.
Every transfer returns its bytes and the server's
:class:`~txfbtftp.SessionRecord`::

    from txfbtftp.testing import MemoryServer

    def test_menu_per_client():
        server = MemoryServer(MenuBackend())
        got = server.get("pxelinux.cfg/default", client=("10.0.0.7", 2000))
        assert got.ok and got.data.startswith(b"DEFAULT")
        assert got.record.reason == "ok"

Backends that answer with Deferreds are fine as long as those fire on the
clock or at once; the harness advances the clock to the next timer whenever
nothing else is in flight, so a stalled backend meets the watchdog as it
would in production.  ``lose`` drops chosen packets, to see retransmissions.
:meth:`MemoryServer.send` and :meth:`MemoryServer.advance` drive it with raw
datagrams instead, for input no well-behaved client sends::

    replies = server.send(b"\\x00\\x09junk", client=("203.0.113.9", 1234))
    assert replies[0][:4] == b"\\x00\\x05\\x00\\x04"  # ERROR 4
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from txfbtftp._interfaces import Address, IBackend
from txfbtftp._observe.records import SessionRecord
from txfbtftp._observe.stats import ServerStats
from txfbtftp._protocol.client import ClientTransfer
from txfbtftp._protocol.machine import Outcome
from txfbtftp._protocol.schedule import Schedule
from txfbtftp._server.access import AccessRules
from txfbtftp._server.config import ServerConfig
from txfbtftp._server.dispatcher import TFTPProtocol
from txfbtftp._types import IServerReactor

__all__ = ["MemoryServer", "Transfer", "Lose"]

#: ``lose(to_server, packet) -> bool``: True drops the packet.
Lose = Callable[[bool, bytes], bool]
#: How much clock time one transfer may take before the harness stops waiting.
_PATIENCE = 3600.0


@dataclass
class Transfer:
    """What a client saw of one transfer, and the server's record of it."""

    #: The bytes downloaded (a read) or sent (a write).
    data: bytes
    #: ``ok``, ``client-error``, ``server-error`` or ``timeout``, as the client saw it.
    outcome: str
    #: The ERROR that ended it (sent by the server, or by the client), if any.
    error_code: int | None
    error_message: str
    #: The options the server's OACK acknowledged (empty: no OACK).
    options: dict[str, str]
    #: The server's record of the session; None if the server never started one.
    record: SessionRecord | None
    #: Every packet the server sent to this client, in order.
    packets: list[bytes] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.OK.value


class _Wire:
    """The listening port's side of the memory network: what it sends, queued per client."""

    def __init__(self, host: str, port: int) -> None:
        self.interface = host
        self._host = IPv4Address("UDP", host, port)
        self.sent: list[tuple[bytes, Address]] = []

    def getHost(self) -> IPv4Address:
        return self._host

    def write(self, data: bytes, addr: Address) -> None:
        self.sent.append((data, (addr[0], addr[1])))


class MemoryServer:
    """``backend`` served by the real protocol on a clock, for clients in memory.

    ``config`` is the server's (its ``single_port`` is forced on: every
    packet passes the listening protocol, as behind a NAT).  Every record
    lands in :attr:`records`.
    """

    def __init__(self, backend: IBackend, config: ServerConfig | None = None, clock: Clock | None = None,
                 address: Address = ("192.0.2.1", 69), access: AccessRules | None = None) -> None:
        self.clock = clock or Clock()
        self.address = address
        self.config = dataclasses.replace(config or ServerConfig(), single_port=True)
        self.protocol = TFTPProtocol(backend, _clock_reactor(self.clock), self.config, access=access)
        self._wire = _Wire(*address)
        self.protocol.transport = self._wire  # type: ignore[assignment]
        self.records: list[SessionRecord] = []
        self.protocol.stats.session_listeners.append(self.records.append)

    @property
    def stats(self) -> ServerStats:
        """The server's :class:`~txfbtftp.ServerStats`."""
        return self.protocol.stats

    def get(self, path: str, options: dict[str, str] | None = None, mode: str = "octet",
            client: Address = ("192.0.2.10", 40000), lose: Lose | None = None,
            schedule: Schedule | None = None) -> Transfer:
        """Download ``path``; ``options`` as a client requests them (e.g. ``{"blksize": "1468"}``)."""
        transfer = ClientTransfer(path, False, mode, options, schedule)
        return self._run(transfer, client, b"", lose)

    def put(self, path: str, data: bytes, options: dict[str, str] | None = None, mode: str = "octet",
            client: Address = ("192.0.2.10", 40000), lose: Lose | None = None,
            schedule: Schedule | None = None) -> Transfer:
        """Upload ``data`` as ``path``."""
        transfer = ClientTransfer(path, True, mode, options, schedule)
        return self._run(transfer, client, data, lose)

    def send(self, datagram: bytes, client: Address = ("192.0.2.10", 40000)) -> list[bytes]:
        """Deliver one raw ``datagram`` from ``client``: what the server sent it in reply."""
        self.protocol.packetReceived(datagram, client, (self.address[0], 0))
        replies = [data for data, to in self._wire.sent if to == client]
        self._wire.sent = [(data, to) for data, to in self._wire.sent if to != client]
        return replies

    def advance(self, seconds: float) -> list[tuple[bytes, Address]]:
        """Let ``seconds`` pass, timer by timer: every datagram sent meanwhile, and to whom."""
        end = self.clock.seconds() + seconds
        while True:
            due = [c.getTime() for c in self.clock.getDelayedCalls() if c.getTime() <= end]
            step = min(due, default=end) - self.clock.seconds()
            self.clock.advance(max(0.0, step))
            if not due:
                break
        sent, self._wire.sent = self._wire.sent, []
        return sent

    def _run(self, transfer: ClientTransfer, client: Address, upload: bytes, lose: Lose | None) -> Transfer:
        clock, proto, wire = self.clock, self.protocol, self._wire
        before = len(self.records)
        local = (self.address[0], 0)
        got: list[bytes] = []
        seen: list[bytes] = []
        offset = 0
        out: list[bytes] = []
        transfer.start(clock.seconds(), out)
        give_up = clock.seconds() + _PATIENCE
        while True:
            for pkt in out:
                if lose is None or not lose(True, pkt):
                    proto.packetReceived(pkt, client, local)
            out = []
            replies = [data for data, to in wire.sent if to == client]
            wire.sent = [(data, to) for data, to in wire.sent if to != client]
            for pkt in replies:
                seen.append(pkt)
                if lose is None or not lose(False, pkt):
                    payload = transfer.receive(pkt, clock.seconds(), out)
                    if payload:
                        got.append(payload)
            while transfer.wants > 0:
                chunk = upload[offset:offset + _blksize(transfer)]
                offset += len(chunk)
                transfer.feed(chunk, clock.seconds(), out)
            if out:
                continue
            if transfer.finished and client not in proto.sessions:
                break
            when = self._next_event(transfer)
            if when is None or when > give_up:
                break
            clock.advance(max(0.0, when - clock.seconds()))
            transfer.timeout(clock.seconds(), out)
        record = next((r for r in self.records[before:] if (r.client, r.client_port) == client), None)
        outcome = transfer.outcome or Outcome.TIMEOUT
        data = upload[:offset] if transfer.write else b"".join(got)
        return Transfer(data, outcome.value, transfer.error_code, transfer.error_message,
                        dict(transfer.acknowledged), record, seen)

    def _next_event(self, transfer: ClientTransfer) -> float | None:
        """When the next timer (the server's or the client's) comes, if any."""
        times = [c.getTime() for c in self.clock.getDelayedCalls()]
        if transfer.deadline is not None and not transfer.finished:
            times.append(transfer.deadline)
        return min(times) if times else None


def _blksize(transfer: ClientTransfer) -> int:
    m = transfer.machine
    return m.blksize if m is not None else 512


def _clock_reactor(clock: Clock) -> IServerReactor:
    """A clock is all the reactor a single-port protocol in memory needs."""
    return clock  # type: ignore[return-value]
