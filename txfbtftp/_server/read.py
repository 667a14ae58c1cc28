"""A download's driver, and the DATA hot path.

A datagram from the client arrives from the poller through the link
(:meth:`ReadSession.receive`): the machine takes the ACK, the reader fills
the window (synchronously while the reader is synchronous: no Deferred per
block), and the step's packets leave in one batch.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from txfbtftp._interfaces import IReader, MaybeDeferred, TransferRequest
from txfbtftp._protocol.options import Negotiated
from txfbtftp._protocol.read import ReadMachine
from txfbtftp._protocol.schedule import Watchdog
from txfbtftp._netascii import NetasciiReader
from txfbtftp._server.session import Session
from txfbtftp._wait import take

Read = Callable[[int], MaybeDeferred[bytes]]


class ReadSession(Session[ReadMachine]):
    """Serves an RRQ from the backend's :class:`~txfbtftp.IReader`."""

    reader: IReader | None = None
    _read: Read

    def _open(self, path: str, request: TransferRequest) -> MaybeDeferred[IReader]:
        return self.host.backend.get_reader(path, request)

    def _adopt(self, handle: IReader) -> int | None:
        reader = self.reader = NetasciiReader(handle) if self.request.mode == "netascii" else handle
        self._read = reader.read
        return reader.size

    def _discard(self, handle: IReader) -> None:
        handle.close()

    def _machine(self, neg: Negotiated, watchdog: Watchdog, oack: bytes | None) -> ReadMachine:
        return ReadMachine(watchdog, neg.blksize, neg.windowsize, neg.rollover, oack, quiet_until_verified=True)

    def _started(self, machine: ReadMachine, now: float) -> None:
        self._pump(machine, now)
        # Only a class that declares it (not a subclass that may read otherwise).
        if not self._closed and vars(type(self.reader)).get("LANE") is True and machine.rollover == 0:
            self._link_keeps_time = self.link.open_lane(self, machine, self.reader)

    def _release(self, outcome: Any) -> None:
        if self.reader is not None:
            self.reader.close()

    def receive(self, data: bytes) -> None:
        m = self.machine
        if m is None:
            return  # still opening; the client will repeat itself
        now = self._seconds()
        out = self._out
        m.receive(data, now, out)
        if self._wait.pending is None:
            self._pump(m, now)
        if out:
            gate = self._gate
            if gate is None or self._passes(gate, out):
                self.link.send(out)
            out.clear()
        self._after(m, now)

    def _pump(self, m: ReadMachine, now: float) -> None:
        """Fill the window; synchronously while the reader is."""
        read = self._read
        bs = m.blksize
        out = self._out
        try:
            wants = m.wants
            while wants > 0:
                data = read(bs)
                if type(data) is not bytes:
                    got = self._settled(data) if isinstance(data, Deferred) else data
                    if got is None:
                        return  # not there yet: _read_done continues
                    if isinstance(got, Failure):
                        self._io_failed(got)
                        return
                    data = bytes(got)
                wants = m.feed(data, now, out)
        except Exception:
            self._io_failed(Failure())

    def _settled(self, d: Deferred[bytes]) -> bytes | Failure | None:
        """What ``d`` fired with, if it has (taken here, not through a
        callback: no recursion); else None, and :meth:`_read_done` follows."""
        box = take(d)
        if box:
            return box[0]
        self._wait.wait_for(d)
        d.addCallback(lambda _: self._read_done(box[0])).addErrback(self._crashed)
        return None

    def lane_failed(self, failure: Failure) -> None:
        """The compiled lane could not write a step back whole: the
        transfer's state cannot be trusted, so it ends as a failed read does."""
        self._io_failed(failure)

    def _read_done(self, data: Any) -> None:
        self._wait.done()
        m = self.machine
        if self._closed or m is None:
            return
        if isinstance(data, Failure):
            self._io_failed(data)
            return
        now = self._seconds()
        m.feed(bytes(data), now, self._out)
        self._pump(m, now)
        self._flush()
        self._after(m, now)
