"""Files from an HTTP(S) origin: ``--backend http:https://repo.example/boot/``.

A TFTP path names a URL under the base.  The body is streamed: the first
DATA leaves as soon as the first block has arrived, and each download buffers
at most a bounded amount (the origin connection is paused beyond it), so two
hundred slow clients do not each hold a kernel in memory.  Connections are
pooled and kept alive; the headers must arrive within ``timeout`` (well
inside a PXE ROM's patience for the first packet) and the body may not stall
for longer than ``stall_timeout``.
"""
from __future__ import annotations

import re
from typing import Any, Optional
from urllib.parse import quote, urlsplit

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent
from zope.interface import implementer

from txfbtftp import errors
from txfbtftp.interfaces import IBackend, TransferRequest
from txfbtftp.logs import log
from txfbtftp.origin import IBody, IOrigin, OriginResponse

#: Characters a path segment may carry unencoded (RFC 3986 pchar, less ``;``,
#: which some servers take for parameters).
_SEGMENT_SAFE = "!$&'()*+,=:@"
#: How much of an error page is read so the connection can be reused.
_DISCARD_LIMIT = 65536


def relative(path: str) -> str:
    """``path`` as a clean relative name: no leading ``/``, no ``.``/empty
    segments; AccessViolation for ``..`` (with either slash, since some
    origins take a backslash for a separator)."""
    rel = path.lstrip("/")
    if "\x00" in rel:
        raise errors.FileNotFound()
    if any(part == ".." for part in re.split(r"[/\\]", rel)):
        raise errors.AccessViolation()
    segments = [s for s in rel.split("/") if s not in ("", ".")]
    if not segments:
        raise errors.FileNotFound()
    return "/".join(segments)


def _base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("the http backend takes an http:// or https:// base URL, not %r" % url)
    if parts.query or parts.fragment:
        raise ValueError("the base URL %r may not have a query or fragment" % url)
    return url if url.endswith("/") else url + "/"


@implementer(IBody)
class BodyStream(Protocol):
    """One response body, as an :class:`~txfbtftp.interfaces.IReader`.

    Bytes are buffered up to ``high_water``; past it the connection is
    paused, and it is resumed once reads bring the buffer under half of it.
    ``read(n)`` answers at once when ``n`` bytes (or the end) are at hand and
    otherwise with a Deferred fired when they arrive.
    """

    def __init__(self, reactor: Any, url: str, size: Optional[int], stall_timeout: float,
                 high_water: int = 256 * 1024) -> None:
        self.size = size
        self.complete = False
        self.received = 0
        self._reactor = reactor
        self._url = url
        self._stall = stall_timeout
        self._high = high_water
        self._buf = bytearray()
        self._pos = 0
        self._waiter: Optional[Deferred] = None
        self._want = 0
        self._some = False
        self._eof = False
        self._error: Optional[errors.TFTPError] = None
        self._closed = False
        self._paused = False
        self._timer: Any = None

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    # -- the connection's side ------------------------------------------------
    def connectionMade(self) -> None:
        self._arm()

    def settle(self) -> None:
        """Re-apply a pause requested while the response was handing over
        early bytes (it resumes the connection when it is done)."""
        if self._paused and self.transport is not None:
            self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        if self._closed:
            return
        self._buf += data
        self.received += len(data)
        if not self._paused and self.buffered > self._high:
            self._paused = True
            self.transport.pauseProducing()
        self._arm()
        self._wake()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm()
        if self._closed or self._error is not None:
            return
        if reason.check(ResponseDone):
            if self.size is not None and self.received != self.size:
                self._broken("ended after %d of %d bytes" % (self.received, self.size))
            else:
                self._eof = self.complete = True
        elif reason.check(PotentialDataLoss):
            self._eof = True  # no length announced: whole as far as anyone can tell
        elif self.size is not None and self.received < self.size:
            self._broken("connection lost after %d of %d bytes" % (self.received, self.size))
        else:
            self._broken("broke off after %d bytes: %s" % (self.received, _reason(reason)))
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
        self.transport.stopProducing()
        self._wake()

    # -- the reader's side ----------------------------------------------------
    def read(self, n: int) -> Any:
        if self.buffered >= n or self._eof:
            return self._take(n)
        return self._wait(n, False)

    def readsome(self, limit: int) -> Any:
        if self.buffered or self._eof:
            return self._take(limit)
        return self._wait(limit, True)

    def _wait(self, n: int, some: bool) -> Any:
        if self._error is not None:
            raise errors.TFTPError()
        if self._closed:
            raise errors.TFTPError()
        d = self._waiter = Deferred()
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
        if self._paused and not self._closed and self.transport is not None:
            self._paused = False
            self.transport.resumeProducing()
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
        if not self._eof and self._error is None and self.transport is not None:
            self.transport.stopProducing()


class _Discard(Protocol):
    """Reads an unwanted body so its connection can go back to the pool; a
    long one costs the connection instead."""

    def __init__(self) -> None:
        self._seen = 0

    def dataReceived(self, data: bytes) -> None:
        self._seen += len(data)
        if self._seen > _DISCARD_LIMIT:
            self.transport.stopProducing()


@implementer(IAgent)
class _IdentityAgent:
    """Asks for bodies as they are stored: treq offers gzip, which would hide
    the length (no tsize, no length check) and change validators."""

    def __init__(self, agent: Any) -> None:
        self._agent = agent

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Any:
        if headers is not None:
            headers = headers.copy()
            headers.removeHeader(b"accept-encoding")
        return self._agent.request(method, uri, headers, bodyProducer)


@implementer(IOrigin)
class HTTPOrigin:
    """Fetches files under ``base``, over a pool of persistent connections."""

    def __init__(self, base: str, reactor: Any, timeout: float = 3.0,
                 stall_timeout: Optional[float] = None, high_water: int = 256 * 1024,
                 max_idle_connections: int = 16) -> None:
        self.base = _base(base)
        self.timeout = timeout
        self.stall_timeout = timeout if stall_timeout is None else stall_timeout
        self.high_water = high_water
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = max_idle_connections
        # Without this every connection logs two lines at info.
        self._pool._factory = type("QuietHTTPClientFactory", (self._pool._factory,), {"noisy": False})
        agent = Agent(reactor, pool=self._pool, connectTimeout=timeout)
        self._client = HTTPClient(_IdentityAgent(agent))

    def key(self, path: str) -> str:
        """The URL: distinct across origins, so caches of two never mix."""
        return self.url(path)

    def url(self, path: str) -> str:
        segments = relative(path).split("/")
        return self.base + "/".join(
            quote(s.encode("utf-8", "surrogateescape"), safe=_SEGMENT_SAFE) for s in segments)

    def fetch(self, path: str, etag: Optional[str] = None,
              last_modified: Optional[str] = None) -> Deferred:
        url = self.url(path)
        headers = {b"User-Agent": [b"txfbtftp"]}
        if etag is not None:
            headers[b"If-None-Match"] = [etag.encode("latin-1")]
        if last_modified is not None:
            headers[b"If-Modified-Since"] = [last_modified.encode("latin-1")]
        d = self._client.get(url, headers=headers, unbuffered=True, reactor=self._reactor)
        timed_out = []

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self._reactor.callLater(self.timeout, expire)

        def stop_timer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(stop_timer)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(url, etag or last_modified),
                       errbackArgs=(url, timed_out))
        return d

    def _answered(self, response: Any, url: str, conditional: Any) -> OriginResponse:
        code = response.code
        etag = _header(response, b"etag")
        modified = _header(response, b"last-modified")
        if code == 200:
            size = None if response.length is UNKNOWN_LENGTH else response.length
            body = BodyStream(self._reactor, url, size, self.stall_timeout, self.high_water)
            response.deliverBody(body)
            body.settle()
            return OriginResponse(200, size, etag, modified, body)
        response.deliverBody(_Discard())
        if code == 304 and conditional:
            return OriginResponse(304, None, etag, modified)
        if code in (404, 410):
            raise errors.FileNotFound()
        if code in (401, 403):
            raise errors.AccessViolation()
        log.warn("{url}: HTTP {code}", url=url, code=code)
        raise errors.TFTPError()

    def _failed(self, failure: Failure, url: str, timed_out: list) -> None:
        if timed_out or failure.check(CancelledError):
            log.warn("{url}: no answer within {timeout}s", url=url, timeout=self.timeout)
        else:
            log.warn("{url}: {why}", url=url, why=_reason(failure))
        raise errors.TFTPError()

    def close(self) -> Deferred:
        """Close the idle connections (for a clean shutdown)."""
        return self._pool.closeCachedConnections()


def _header(response: Any, name: bytes) -> Optional[str]:
    values = response.headers.getRawHeaders(name)
    return values[0].decode("latin-1") if values else None


def _reason(failure: Failure) -> str:
    """The useful part of Twisted's nested ``ResponseFailed([...])`` reasons."""
    inner = getattr(failure.value, "reasons", None)
    if inner:
        return "; ".join(_reason(f) for f in inner)
    return "%s: %s" % (type(failure.value).__name__, failure.getErrorMessage())


@implementer(IBackend)
class HTTPBackend:
    """Streams each download straight from the origin; uploads are refused."""

    def __init__(self, origin: HTTPOrigin) -> None:
        self.origin = origin

    def get_reader(self, path: str, request: TransferRequest) -> Deferred:
        return self.origin.fetch(path).addCallback(lambda response: response.body)

    def get_writer(self, path: str, request: TransferRequest) -> Any:
        raise errors.AccessViolation()
