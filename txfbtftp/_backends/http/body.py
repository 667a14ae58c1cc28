"""An HTTP response body as a reader: streamed, bounded, timed.

The first DATA leaves as soon as the first block has arrived, and each
download buffers at most a bounded amount (the origin connection is paused
beyond it), so two hundred slow clients do not each hold a kernel in memory.
A body that stalls for longer than ``stall_timeout`` is broken off.  A body
that must start further on (an origin that answers a Range request with the
whole file) drops its first ``skip`` bytes as they arrive.
"""
from __future__ import annotations

from typing import cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from zope.interface import implementer

from txfbtftp._backends.http.iorigin import IBody
from txfbtftp._interfaces import MaybeDeferred
from txfbtftp._observe.logs import log
from txfbtftp._protocol import errors

#: How much of an error page is read so the connection can be reused.
_DISCARD_LIMIT = 65536


@implementer(IBody)
class BodyStream(Protocol):
    """One response body, as an :class:`~txfbtftp.interfaces.IReader`.

    Bytes are buffered up to ``high_water``; past it the connection is
    paused, and it is resumed once reads bring the buffer under half of it.
    ``read(n)`` answers at once when ``n`` bytes (or the end) are at hand and
    otherwise with a Deferred fired when they arrive.  ``size`` is what
    the reader gets (after ``skip``); ``received`` counts every byte.
    """

    def __init__(self, reactor: IReactorTime, url: str, size: int | None, stall_timeout: float,
                 high_water: int = 256 * 1024, skip: int = 0) -> None:
        self.size = None if size is None else size - skip
        self._skip = skip
        self._whole = size
        self.complete = False
        self.received = 0
        self._reactor = reactor
        self._url = url
        self._stall = stall_timeout
        self._high = high_water
        self._buf = bytearray()
        self._pos = 0
        self._waiter: Deferred[bytes] | None = None
        self._want = 0
        self._some = False
        self._eof = False
        self._error: errors.TFTPError | None = None
        self._closed = False
        self._paused = False
        self._timer: IDelayedCall | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    # -- the connection's side ------------------------------------------------
    def connectionMade(self) -> None:
        self._arm()

    def settle(self) -> None:
        """Re-apply a pause requested while the response was handing over
        early bytes (it resumes the connection when it is done)."""
        producer = self._producer()
        if self._paused and producer is not None:
            producer.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self.received += len(data)
        if self._skip:
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            data = data[dropped:]
        self._buf += data
        if not self._paused and self.buffered > self._high:
            self._paused = True
            self._pause()
        self._arm()
        self._wake()

    def connectionLost(self, why: Failure = connectionDone) -> None:
        self._disarm()
        if self._closed or self._error is not None:
            return
        whole = self._whole
        if why.check(ResponseDone):
            if whole is not None and self.received != whole:
                self._broken("ended after %d of %d bytes" % (self.received, whole))
            elif self._skip:
                self._broken("ended after %d bytes, before the part wanted" % self.received)
            else:
                self._eof = self.complete = True
        elif why.check(PotentialDataLoss) and not self._skip:
            self._eof = True  # no length announced: whole as far as anyone can tell
        elif whole is not None and self.received < whole:
            self._broken("connection lost after %d of %d bytes" % (self.received, whole))
        else:
            self._broken("broke off after %d bytes: %s" % (self.received, reason(why)))
        self._wake()

    def _broken(self, why: str) -> None:
        log.warn("{url}: {why}", url=self._url, why=why)
        self._error = errors.TFTPError()

    def _arm(self) -> None:
        if self._eof or self._error is not None or self._closed or self._paused:
            self._disarm()
        elif self._timer is not None and self._timer.active():
            self._timer.reset(self._stall)
        else:
            self._timer = self._reactor.callLater(self._stall, self._stalled)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _stalled(self) -> None:
        self._timer = None
        self._broken("no data for %gs after %d bytes" % (self._stall, self.received))
        self._stop()
        self._wake()

    def _producer(self) -> IPushProducer | None:
        """The connection, as a response hands it over: a push producer."""
        return cast(IPushProducer | None, self.transport)

    def _pause(self) -> None:
        producer = self._producer()
        if producer is not None:
            producer.pauseProducing()

    def _stop(self) -> None:
        producer = self._producer()
        if producer is not None:
            producer.stopProducing()

    # -- the reader's side ----------------------------------------------------
    def read(self, n: int) -> MaybeDeferred[bytes]:
        if self.buffered >= n or self._eof:
            return self._take(n)
        return self._wait(n, False)

    def readsome(self, limit: int) -> MaybeDeferred[bytes]:
        if self.buffered or self._eof:
            return self._take(limit)
        return self._wait(limit, True)

    def _wait(self, n: int, some: bool) -> Deferred[bytes]:
        if self._error is not None:
            raise errors.TFTPError()
        if self._closed:
            raise errors.TFTPError()
        d: Deferred[bytes] = Deferred()
        self._waiter = d
        self._want, self._some = n, some
        self._resume()
        return d

    def _wake(self) -> None:
        d = self._waiter
        if d is None:
            return
        avail = self.buffered
        if avail >= self._want or (avail and self._some) or self._eof:
            self._waiter = None
            d.callback(self._take(self._want))
        elif self._error is not None:
            self._waiter = None
            d.errback(errors.TFTPError())

    def _take(self, n: int) -> bytes:
        pos = self._pos
        data = bytes(self._buf[pos:pos + n])
        pos += len(data)
        if pos >= len(self._buf):
            self._buf.clear()
            pos = 0
        elif pos > 65536 and pos * 2 > len(self._buf):
            del self._buf[:pos]
            pos = 0
        self._pos = pos
        if self._paused and self.buffered <= self._high // 2:
            self._resume()
        return data

    def _resume(self) -> None:
        producer = self._producer()
        if self._paused and not self._closed and producer is not None:
            self._paused = False
            producer.resumeProducing()
            self._arm()

    def close(self) -> None:
        """Drop the buffer; a body not read to the end costs its connection."""
        if self._closed:
            return
        self._closed = True
        self._disarm()
        self._buf = bytearray()
        self._pos = 0
        self._waiter = None
        if not self._eof and self._error is None:
            self._stop()


class Discard(Protocol):
    """Reads an unwanted body so its connection can go back to the pool; a
    long one costs the connection instead."""

    def __init__(self) -> None:
        self._seen = 0

    def dataReceived(self, data: bytes) -> None:
        self._seen += len(data)
        if self._seen > _DISCARD_LIMIT:
            producer = cast(IPushProducer | None, self.transport)
            if producer is not None:
                producer.stopProducing()


def causes(failure: Failure) -> list[Failure]:
    """What Twisted's nested ``ResponseFailed([...])`` reasons come down to."""
    inner = getattr(failure.value, "reasons", None)
    if inner:
        return [c for f in inner if isinstance(f, Failure) for c in causes(f)]
    return [failure]


def reason(failure: Failure) -> str:
    """The useful part of ``failure``: its causes."""
    return "; ".join("%s: %s" % (type(f.value).__name__, f.getErrorMessage()) for f in causes(failure))
