"""A body being written to a fill's temporary file, and the readers that follow it.

Whoever writes the file (this process, or another one this process
watches), readers read what is written so far with ``pread`` and wait when
they reach its end.  A fill ends complete (readers read to the end),
failed (the origin broke off: readers past what was written get an error,
as they would have from the origin), or abandoned (the cache could not
keep it: no room, a write error, a filler that gave up): then
each reader goes on from its own offset straight from the origin
(:class:`~txfbtftp._backends.http.detour.Detour`), and the client sees no
error.
"""
from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from txfbtftp._backends.http.detour import Detour, Source
from txfbtftp._interfaces import IReader, MaybeDeferred
from txfbtftp._protocol import errors

_T = TypeVar("_T")


def answer(d: Deferred[_T], call: Callable[..., MaybeDeferred[_T]], *args: Any, **kwargs: Any) -> None:
    """Fire a waiter's ``d`` with what ``call(*args, **kwargs)`` gives: a
    value, a Deferred's result, or the TFTP error it raised."""
    try:
        result = call(*args, **kwargs)
    except errors.TFTPError as e:
        d.errback(Failure(e))
        return
    if isinstance(result, Deferred):
        result.chainDeferred(d)
    else:
        d.callback(result)


class State(enum.Enum):
    FILLING = "filling"
    COMPLETE = "complete"
    FAILED = "failed"
    ABANDONED = "abandoned"


class FillFile:
    """The temporary file ``fd`` of a fill from ``source``, written as far as ``written``.

    ``on_wait`` is called when a reader starts waiting (a process following
    another's fill polls only then), ``on_unread`` when the last reader has
    gone, ``on_detour(why)`` for each reader sent to the origin.  The
    descriptor is closed when the driver and every reader have released it.
    """

    def __init__(self, fd: int, source: Source, written: int = 0,
                 on_wait: Callable[[], None] | None = None,
                 on_detour: Callable[[str], None] | None = None) -> None:
        self.fd = fd
        self.source = source
        self.size = source.size
        self.written = written
        self.state = State.FILLING
        self.why = ""
        self.refs = 1
        self.pending: list[tuple[FillReader, int, Deferred[bytes]]] = []
        self.on_wait = on_wait
        self.on_unread: Callable[[], None] | None = None
        self.on_detour = on_detour

    @property
    def waiting(self) -> bool:
        return bool(self.pending)

    def grew(self, written: int) -> None:
        self.written = written
        self._wake()

    def complete(self) -> None:
        self.size = self.written
        self.state = State.COMPLETE
        self._wake()

    def fail(self) -> None:
        self.state = State.FAILED
        self._wake()

    def abandon(self, why: str) -> None:
        if self.state is State.FILLING:
            self.state = State.ABANDONED
            self.why = why
            self._wake()

    def _wake(self) -> None:
        pending, self.pending = self.pending, []
        for reader, n, d in pending:
            if reader.closed:
                continue
            answer(d, reader.next, n, waited=True)

    def reader(self) -> FillReader:
        return FillReader(self)

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 1 and self.on_unread is not None:
            self.on_unread()
        if self.refs == 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@implementer(IReader)
class FillReader:
    """Follows a fill, waiting when it reaches the end of what is written so
    far; from the origin if the fill is abandoned."""

    __slots__ = ("size", "offset", "closed", "_fill", "_detour")

    def __init__(self, fill: FillFile) -> None:
        self.size = fill.size
        self.offset = 0
        self.closed = False
        self._fill: FillFile | None = fill
        self._detour: Detour | None = None
        fill.refs += 1

    def read(self, n: int) -> MaybeDeferred[bytes]:
        return self.next(n, False)

    def next(self, n: int, waited: bool) -> MaybeDeferred[bytes]:
        """``read``, by a reader that has ``waited`` already (no second call to ``on_wait``)."""
        f = self._fill
        if f is None:
            assert self._detour is not None
            return self._detour.read(n)
        state = f.state
        if state is State.ABANDONED:
            return self._go_direct(f, n)
        if self.offset + n <= f.written or state is State.COMPLETE:
            data = os.pread(f.fd, n, self.offset)
            self.offset += len(data)
            return data
        if state is State.FAILED:
            raise errors.TFTPError()
        d: Deferred[bytes] = Deferred()
        f.pending.append((self, n, d))
        if not waited and f.on_wait is not None:
            f.on_wait()
        return d

    def _go_direct(self, fill: FillFile, n: int) -> MaybeDeferred[bytes]:
        self._detour = Detour(fill.source, self.offset)
        self._fill = None
        if fill.on_detour is not None:
            fill.on_detour(fill.why)
        fill.release()
        return self._detour.read(n)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._fill is not None:
                self._fill.release()
                self._fill = None
            if self._detour is not None:
                self._detour.close()
