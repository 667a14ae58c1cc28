"""One client transfer on a UDP port of its own: the machines' driver.

:class:`TransferProtocol` does for a :class:`~txfbtftp._protocol.client.ClientTransfer`
what a session does for the server's machines: it feeds in datagrams,
deadlines and the answers of its reader or writer
(:class:`~txfbtftp.client._files.FileSide`), and
sends each step's outbox in one batch.  It locks the server's transfer ID
on the first answer from the server's address; a datagram from anywhere
else gets ERROR 5 and changes nothing.  The result fires once every byte
has moved (and a download's writer has committed); a download's port then
stays open for the dally, to repeat the final ACK if the server repeats the
last block.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import time
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from txfbtftp._interfaces import Address, IReader, IWriter
from txfbtftp._net.batch import BatchSender
from txfbtftp._net.listener import set_receive_buffer
from txfbtftp._protocol import errors, packet
from txfbtftp._protocol.client import ClientTransfer
from txfbtftp.client._files import FileSide, Progress
from txfbtftp.client._result import ClientResult, record

_UNKNOWN_TID = packet.error(packet.ERR_UNKNOWN_TID, packet.MESSAGES[packet.ERR_UNKNOWN_TID])
#: Room for a window of large blocks while the reactor is busy elsewhere.
RECEIVE_BUFFER = 4 << 20


@implementer(IPushProducer)
class TransferProtocol(DatagramProtocol):
    """Drives ``transfer`` with ``server``; ``done`` fires with the result.

    A download writes into ``writer``, an upload reads from ``reader``.
    Cancelling ``done`` sends the server an ERROR and closes the port.  As
    a consumer's producer, pausing stops reading the socket; so does a
    writer that falls behind (:data:`~txfbtftp.client._files.BACKLOG`), and then the watchdog
    waits too: the local write is bounded by the schedule's patience.
    """

    noisy = False

    def __init__(self, clock: IReactorTime, transfer: ClientTransfer, server: Address,
                 reader: IReader | None = None, writer: IWriter | None = None,
                 progress: Progress | None = None) -> None:
        self.transfer = transfer
        self.server = server
        self.done: Deferred[ClientResult] = Deferred(self._cancel)
        self.files = FileSide(clock, transfer, reader, writer, self._resume, self._local_failure, progress,
                              self._hold)
        self._clock = clock
        self._server_ip = ipaddress.ip_address(server[0])
        self._out: list[bytes] = []
        self._peer: Address | None = None
        self._sock: socket.socket | None = None
        self._batch = BatchSender()
        self._timer: IDelayedCall | None = None
        self._timer_at = 0.0
        self._us: Address = ("", 0)
        self._started_at = 0.0
        self._ended: tuple[float, float] | None = None   # wall clock, reactor clock
        self._settled = False     # done has fired, or is about to
        self._closed = False
        self._paused = False
        self._reads = True

    # -- the port ---------------------------------------------------------------------
    def startProtocol(self) -> None:
        port = cast(Any, self.transport)
        sock = self._sock = port.socket
        set_receive_buffer(sock, RECEIVE_BUFFER)
        self._us = _source(sock, port.getHost(), self.server)
        self._started_at = time.time()
        now = self._clock.seconds()
        self.transfer.start(now, self._out)
        self._step(now)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        peer = self._peer
        if peer is None or addr[1] != peer[1] or addr[0] != peer[0]:
            if self._closed or not self._from_server(data, addr):
                return
        elif self._closed:
            return
        now = self._clock.seconds()
        payload = self.transfer.receive(data, now, self._out)
        if payload:
            self.files.store(payload)
        self._step(now)

    def _from_server(self, data: bytes, addr: Any) -> bool:
        """The server's transfer ID is where its first answer came from."""
        peer = (addr[0], addr[1])
        if self._peer is None:
            try:
                if ipaddress.ip_address(addr[0]) == self._server_ip:
                    self._peer = peer
                    return True
            except ValueError:
                pass
        elif peer == self._peer:
            return True
        if packet.opcode_of(data) != packet.ERROR:
            self._send([_UNKNOWN_TID], peer)
        return False

    def _send(self, packets: list[bytes], to: Address) -> None:
        sock = self._sock
        if sock is None:
            return
        if len(packets) > 1:
            self._batch.send(sock, to, packets)
            return
        try:
            sock.sendto(packets[0], to)
        except OSError:
            pass  # a full buffer is a lost packet: the watchdog resends

    # -- one step ---------------------------------------------------------------------
    def _step(self, now: float) -> None:
        """After any input: fill an upload's window, send, and see whether it ended."""
        t = self.transfer
        if t.write and not t.finished:
            self.files.pump(now, self._out)
        out = self._out
        if out:
            self._send(out, self._peer or self.server)
            out.clear()
        if t.outcome is None:  # neither complete nor finished: the usual case
            self._arm(now)
            return
        if self._ended is None:
            self._ended = (time.time(), now)
        if not self._settled:
            if t.complete:
                self._succeed()
            elif t.finished:
                self._fail(Failure(t.error() or errors.TFTPError("Transfer ended")))
        if t.finished:
            self._close()
        else:
            self._arm(now)

    def _resume(self, fed: bytes | None) -> None:
        """A pending read or write settled."""
        now = self._clock.seconds()
        if fed is not None:
            self.transfer.feed(fed, now, self._out)
            self.files.report()
        self._step(now)

    def _arm(self, now: float) -> None:
        """One reactor timer, moved only earlier: a later deadline waits for it to fire."""
        deadline = self.transfer.deadline
        if deadline is None:
            return
        timer = self._timer
        if timer is not None and timer.active():
            if deadline >= self._timer_at:
                return
            timer.reset(max(0.0, deadline - now))
        else:
            self._timer = self._clock.callLater(max(0.0, deadline - now), self._time_passed)
        self._timer_at = deadline

    def _time_passed(self) -> None:
        self._timer = None
        if self._closed or self.files.held:
            return  # held: the writer's catching up re-arms
        now = self._clock.seconds()
        deadline = self.transfer.deadline
        if deadline is not None and now + 1e-9 >= deadline:
            self.transfer.timeout(max(now, deadline), self._out)
        self._step(now)

    # -- the end --------------------------------------------------------------------------
    def _succeed(self) -> None:
        """Every byte moved; a download's writer commits before the result fires."""
        if self.files.busy:
            return  # the writer's pending write resumes us
        self._settled = True
        self.files.commit().addCallbacks(self._committed, self._commit_failed)

    def _committed(self, _: object) -> None:
        wall, clock = self._ended or (time.time(), self._clock.seconds())
        rec = record(self.transfer, self._us, self.server, self._started_at, wall, clock)
        if not self.done.called:
            self.done.callback(ClientResult(rec, None, self._peer))

    def _commit_failed(self, failure: Failure) -> None:
        if self.files.writer is not None:
            self.files.writer.abort()
        if not self.done.called:
            self.done.errback(failure)

    def _fail(self, failure: Failure) -> None:
        self._settled = True
        self.files.release()
        if not self.done.called:
            self.done.errback(failure)

    def _local_failure(self, failure: Failure) -> None:
        """Our reader or writer failed: tell the server, and fail with that."""
        if self._settled:
            return
        exc = failure.value
        if isinstance(exc, errors.TFTPError):
            code, message = exc.code, exc.message
        elif isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            code, message = packet.ERR_DISK_FULL, packet.MESSAGES[packet.ERR_DISK_FULL]
        else:
            code, message = packet.ERR_UNDEFINED, "Client failed"
        self.transfer.abort(code, message, self._out)
        self._fail(failure)
        self._step(self._clock.seconds())

    def _cancel(self, _: Deferred[ClientResult]) -> None:
        """``done`` was cancelled (Twisted then fails it with CancelledError)."""
        if self._closed:
            if not self._settled:  # the exchange ended, the writer's commit or a write had not
                self._settled = True
                self.files.release()
            return
        self._settled = True
        if not self.transfer.complete:
            self.transfer.abort(packet.ERR_UNDEFINED, "Transfer cancelled", self._out)
        self.files.release()
        self._step(self._clock.seconds())
        self._close()

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._sock = None
        if self.transport is not None:
            cast(Any, self.transport).stopListening()

    # -- back pressure: a consumer's (IPushProducer), or the writer's ---------------------------
    def pauseProducing(self) -> None:
        self._paused = True
        self._reading()

    def resumeProducing(self) -> None:
        self._paused = False
        self._reading()

    def _hold(self, held: bool) -> None:
        self._reading()
        if not held and not self._closed:
            self._step(self._clock.seconds())

    def _reading(self) -> None:
        """Read the socket unless a consumer paused us or the writer is behind."""
        if self._closed:
            return
        read = not (self._paused or self.files.held)
        if read != self._reads:
            self._reads = read
            port = cast(Any, self.transport)
            if read:
                port.startReading()
            else:
                port.stopReading()

    def stopProducing(self) -> None:
        if not self._closed:
            self._local_failure(Failure(errors.TFTPError("Stopped by the consumer")))


def _source(sock: socket.socket, host: Any, server: Address) -> Address:
    """This side's address as the server sees it (the route's source when
    the port is bound to a wildcard); no packet is sent to learn it."""
    if host.host not in ("0.0.0.0", "::", ""):
        return (host.host, host.port)
    probe = socket.socket(sock.family, socket.SOCK_DGRAM)
    try:
        probe.connect(server)
        return (probe.getsockname()[0], host.port)
    except OSError:
        return (host.host, host.port)
    finally:
        probe.close()
