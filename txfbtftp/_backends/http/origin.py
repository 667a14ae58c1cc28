"""Files from an HTTP(S) origin: ``--backend http:https://repo.example/boot/``.

A TFTP path names a URL under the base.  Connections are pooled and kept
alive; the headers must arrive within ``timeout`` (well inside a PXE ROM's
patience for the first packet), and the body streams through a
:class:`~txfbtftp._backends.http.body.BodyStream`.  Stopping closes the
pool's connections.  A download that must go on from a byte offset (a
cache that cannot keep what it was writing) asks for the rest with a Range
request guarded by If-Range.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlsplit

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse
from twisted.web.http_headers import Headers
from zope.interface import implementer

from txfbtftp._backends.http.body import BodyStream, Discard, reason
from txfbtftp._backends.http.iorigin import IOrigin, OriginResponse
from txfbtftp._interfaces import ILifecycle
from txfbtftp._observe.logs import log
from txfbtftp._protocol import errors
from txfbtftp._types import IHTTPReactor

if TYPE_CHECKING:
    from treq._types import _ITreqReactor

#: Characters a path segment may carry unencoded (RFC 3986 pchar, less ``;``,
#: which some servers take for parameters).
_SEGMENT_SAFE = "!$&'()*+,=:@"
#: ``Content-Range: bytes FIRST-LAST/TOTAL`` (TOTAL may be ``*``).
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")


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


def check_base(url: str) -> str:
    """``url`` with a trailing ``/``; ValueError if it cannot be a base URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("the http backend takes an http:// or https:// base URL, not %r" % url)
    if parts.query or parts.fragment:
        raise ValueError("the base URL %r may not have a query or fragment" % url)
    return url if url.endswith("/") else url + "/"


@implementer(IAgent)
class _IdentityAgent:
    """Asks for bodies as they are stored: treq offers gzip, which would hide
    the length (no tsize, no length check) and change validators."""

    def __init__(self, agent: IAgent) -> None:
        self._agent = agent

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None,
                bodyProducer: IBodyProducer | None = None) -> Deferred[IResponse]:
        if headers is not None:
            headers = headers.copy()
            headers.removeHeader(b"accept-encoding")
        return self._agent.request(method, uri, headers, bodyProducer)


class _QuietFactory(_HTTP11ClientFactory):
    """Without this every connection logs two lines at info."""

    noisy = False


class _QuietPool(HTTPConnectionPool):
    _factory = _QuietFactory


@implementer(IOrigin, ILifecycle)
class HTTPOrigin:
    """Fetches files under ``base``, over a pool of persistent connections."""

    def __init__(self, base: str, reactor: IHTTPReactor, timeout: float = 3.0,
                 stall_timeout: float | None = None, high_water: int = 256 * 1024,
                 max_idle_connections: int = 16) -> None:
        self.base = check_base(base)
        self.timeout = timeout
        self.stall_timeout = timeout if stall_timeout is None else stall_timeout
        self.high_water = high_water
        self._reactor = reactor
        self._pool = _QuietPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = max_idle_connections
        agent = Agent(reactor, pool=self._pool, connectTimeout=timeout)
        self._client = HTTPClient(_IdentityAgent(agent))

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None]:
        """Close the pooled connections."""
        return self._pool.closeCachedConnections()

    def key(self, path: str) -> str:
        """The URL: distinct across origins, so caches of two never mix."""
        return self.url(path)

    def url(self, path: str) -> str:
        segments = relative(path).split("/")
        return self.base + "/".join(
            quote(s.encode("utf-8", "surrogateescape"), safe=_SEGMENT_SAFE) for s in segments)

    def fetch(self, path: str, etag: str | None = None,
              last_modified: str | None = None) -> Deferred[OriginResponse]:
        url = self.url(path)
        headers: dict[str | bytes, list[str | bytes]] = {}
        if etag is not None:
            headers[b"If-None-Match"] = [etag.encode("latin-1")]
        if last_modified is not None:
            headers[b"If-Modified-Since"] = [last_modified.encode("latin-1")]
        return self._get(url, headers).addCallbacks(self._answered, self._failed,
                                                    callbackArgs=(url, etag or last_modified), errbackArgs=(url,))

    def fetch_range(self, path: str, offset: int, size: int | None, etag: str | None = None,
                    last_modified: str | None = None) -> Deferred[OriginResponse]:
        """The rest of ``path`` from byte ``offset``, provided it is still the
        file ``etag``, ``last_modified`` and ``size`` describe (If-Range: an
        origin whose file changed answers with all of the new one, which is
        refused).  An origin without ranges answers 200: its body's first
        ``offset`` bytes are dropped as they arrive."""
        url = self.url(path)
        headers: dict[str | bytes, list[str | bytes]] = {b"Range": [b"bytes=%d-" % offset]}
        if etag is not None and not etag.startswith("W/"):  # If-Range takes strong validators only
            headers[b"If-Range"] = [etag.encode("latin-1")]
        elif last_modified is not None:
            headers[b"If-Range"] = [last_modified.encode("latin-1")]
        return self._get(url, headers).addCallbacks(
            self._ranged, self._failed, callbackArgs=(url, offset, size, etag, last_modified), errbackArgs=(url,))

    def _get(self, url: str, headers: dict[str | bytes, list[str | bytes]]) -> Deferred[IResponse]:
        """The response's headers within ``timeout``; a timeout cancels (CancelledError)."""
        headers[b"User-Agent"] = [b"txfbtftp"]
        d = self._client.get(url, headers=headers, unbuffered=True, reactor=cast("_ITreqReactor", self._reactor))
        timer = self._reactor.callLater(self.timeout, d.cancel)

        def stop_timer(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(stop_timer)

    def _answered(self, response: IResponse, url: str, conditional: str | None) -> OriginResponse:
        code = response.code
        etag = _header(response, b"etag")
        modified = _header(response, b"last-modified")
        if code == 200:
            size = None if response.length is UNKNOWN_LENGTH else int(response.length)
            body = BodyStream(self._reactor, url, size, self.stall_timeout, self.high_water)
            response.deliverBody(body)
            body.settle()
            return OriginResponse(200, size, etag, modified, body)
        response.deliverBody(Discard())
        if code == 304 and conditional:
            return OriginResponse(304, None, etag, modified)
        if code in (404, 410):
            raise errors.FileNotFound()
        if code in (401, 403):
            raise errors.AccessViolation()
        log.warn("{url}: HTTP {code}", url=url, code=code)
        raise errors.TFTPError()

    def _ranged(self, response: IResponse, url: str, offset: int, size: int | None, etag: str | None,
                last_modified: str | None) -> OriginResponse:
        code = response.code
        their_etag = _header(response, b"etag")
        their_modified = _header(response, b"last-modified")
        length = None if response.length is UNKNOWN_LENGTH else int(response.length)
        if code == 206:
            match = _CONTENT_RANGE.match(_header(response, b"content-range") or "")
            same = (match is not None and int(match.group(1)) == offset
                    and (size is None or match.group(3) in ("*", str(size)))
                    and (etag is None or their_etag is None or _weak(their_etag) == _weak(etag)))
            skip = 0
        elif code == 200:
            same = (size is None or length in (None, size)) and (
                their_etag == etag if etag is not None else last_modified is None or their_modified == last_modified)
            skip = offset
        elif code == 416 and size is None:
            response.deliverBody(Discard())
            return OriginResponse(416, 0, their_etag, their_modified)  # past the end: nothing more
        else:
            return self._answered(response, url, None)
        if not same:
            response.deliverBody(Discard())
            log.warn("{url}: changed on the origin during a download", url=url)
            raise errors.TFTPError()
        body = BodyStream(self._reactor, url, length, self.stall_timeout, self.high_water, skip)
        response.deliverBody(body)
        body.settle()
        return OriginResponse(code, body.size, their_etag, their_modified, body)

    def _failed(self, failure: Failure, url: str) -> OriginResponse:
        if failure.check(CancelledError):
            log.warn("{url}: no answer within {timeout}s", url=url, timeout=self.timeout)
        else:
            log.warn("{url}: {why}", url=url, why=reason(failure))
        raise errors.TFTPError()


def _weak(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


def _header(response: IResponse, name: bytes) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[0].decode("latin-1") if values else None
