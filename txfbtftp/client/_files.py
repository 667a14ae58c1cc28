"""The local end of a client transfer: the file a download fills or an upload sends.

A download's writer is written in order; blocks that arrive while a write
is pending wait in memory, up to :data:`BACKLOG` bytes, after which the
driver stops reading its socket until the writer catches up.  An upload's
reader is read synchronously while it answers synchronously, so its data
path has no Deferred per block.  A read or write that stays pending for the
schedule's whole patience fails the transfer: a stuck file must not hang it.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from txfbtftp._interfaces import IReader, IWriter
from txfbtftp._protocol import errors
from txfbtftp._protocol.client import ClientTransfer
from txfbtftp._wait import PendingCall, take

#: ``progress(bytes_so_far, total_or_None)``, called as blocks move.
Progress = Callable[[int, "int | None"], object]
#: Bytes a download may hold in memory behind a pending write before it
#: stops reading (the server's packets wait in the socket, or are lost and
#: sent again); it reads again below half of it.
BACKLOG = 1 << 20


class FileSide:
    """The local end of a transfer: the writer a download fills, in order
    (later blocks queue behind a pending write, as in the server's upload
    sessions, up to :data:`BACKLOG`), or the reader an upload sends from
    (synchronously while the reader is).  ``resume`` runs when a pending
    call settles (with the block a pending read brought, to feed),
    ``failed`` when one fails, ``hold(True)`` when the queue is full and
    ``hold(False)`` when it has room again."""

    def __init__(self, clock: IReactorTime, transfer: ClientTransfer, reader: IReader | None,
                 writer: IWriter | None, resume: Callable[[bytes | None], None], failed: Callable[[Failure], None],
                 progress: Progress | None, hold: Callable[[bool], None]) -> None:
        self.clock = clock
        self.transfer = transfer
        self.reader = reader
        self.writer = writer
        self.released = False
        self.held = False
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._resume = resume
        self._failed = failed
        self._progress = progress
        self._hold = hold
        self._call = PendingCall(clock, transfer.schedule.total, self._stalled)

    @property
    def pending(self) -> Deferred[Any] | None:
        """The read or write waited on, if any."""
        return self._call.pending

    @property
    def busy(self) -> bool:
        return self.pending is not None or bool(self._queue)

    def store(self, payload: bytes) -> None:
        if self.pending is not None:
            self._queue.append(payload)
            self._queued += len(payload)
            if self._queued >= BACKLOG and not self.held:
                self.held = True
                self._hold(True)
            return
        assert self.writer is not None
        try:
            result = self.writer.write(payload)
        except Exception:
            self._failed(Failure())
            return
        if isinstance(result, Deferred):
            # One that has fired already is taken here, not in a callback: a
            # queue of them drains in the loop below, not in a recursion.
            box = take(result)
            if not box:
                self._call.wait_for(result)
                result.addCallback(lambda _: self._written(box[0]))
            elif isinstance(box[0], Failure):
                self._failed(box[0])
                return
        if self._progress is not None:
            self.report()

    def _written(self, outcome: object) -> None:
        """A pending write settled with ``outcome``: write what waits behind it."""
        self._call.done()
        if isinstance(outcome, Failure):
            self._failed(outcome)
            return
        while self._queue and self.pending is None and not self.released:
            payload = self._queue.popleft()
            self._queued -= len(payload)
            self.store(payload)
        if self.released:
            return
        if self.held and self._queued < BACKLOG // 2:
            self.held = False
            self._hold(False)
        if self.pending is None:
            self._resume(None)

    def pump(self, now: float, out: list[bytes]) -> None:
        """Fill an upload's window."""
        t, m, reader = self.transfer, self.transfer.machine, self.reader
        if m is None or reader is None or self.pending is not None:
            return
        try:
            while t.wants > 0:
                data = reader.read(m.blksize)
                if isinstance(data, Deferred):
                    got = self._settle(data)
                    if got is None:
                        return  # _read_done continues
                    if isinstance(got, Failure):
                        self._failed(got)
                        return
                    data = got
                t.feed(bytes(data), now, out)
                self.report()
        except Exception:
            self._failed(Failure())

    def _settle(self, d: Deferred[bytes]) -> bytes | Failure | None:
        """What ``d`` fired with, if it has (taken here, not in a callback: no
        recursion); else None, and :meth:`_read_done` follows."""
        box = take(d)
        if box:
            return box[0]
        self._call.wait_for(d)
        d.addCallback(lambda _: self._read_done(box[0]))
        return None

    def _read_done(self, data: bytes | Failure) -> None:
        self._call.done()
        if self.released:
            return
        if isinstance(data, Failure):
            self._failed(data)
            return
        self._resume(bytes(data))

    def _stalled(self, _: Deferred[Any]) -> None:
        if not self.released:
            what = "read" if self.transfer.write else "write"
            self._failed(Failure(errors.TFTPError("The local %s did not finish in %gs"
                                                  % (what, self.transfer.schedule.total))))

    def report(self) -> None:
        m = self.transfer.machine
        if self._progress is not None and m is not None:
            self._progress(m.bytes, self.transfer.tsize)

    def commit(self) -> Deferred[Any]:
        """Every byte moved: close the reader, commit the writer."""
        self.released = True
        self._call.done()
        if self.reader is not None:
            self.reader.close()
        return maybeDeferred(self.writer.commit) if self.writer is not None else succeed(None)

    def release(self) -> None:
        """The transfer failed: close the reader, abort the writer."""
        if self.released:
            return
        self.released = True
        self._call.done()
        self._queue.clear()
        self._queued = 0
        if self.reader is not None:
            self.reader.close()
        if self.writer is not None:
            self.writer.abort()
