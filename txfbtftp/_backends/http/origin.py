"""Files from an HTTP(S) origin: ``--backend http:https://repo.example/boot/``.

A TFTP path names a URL under the base.  Connections are pooled and kept
alive; the headers must arrive within ``timeout`` (well inside a PXE ROM's
patience for the first packet), and the body streams through a
:class:`~txfbtftp._backends.http.body.BodyStream`.  Stopping closes the
pool's connections.  A download that must go on from a byte offset (a
cache that cannot keep what it was writing) asks for the rest with a Range
request guarded by If-Range.

Requests go through Twisted's :class:`~twisted.web.client.Agent` as it is:
a redirect is not followed (an origin's 3xx could otherwise send the server,
and its cache under the base's name, anywhere), and a body is served as
stored, whatever its ``Content-Encoding`` (no ``Accept-Encoding`` is sent,
and nothing is decoded: a ``.gz`` stored with ``Content-Encoding: gzip``
reaches the client byte for byte).
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

from hyperlink import EncodedURL
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from twisted.web.http_headers import Headers
from zope.interface import implementer

from txfbtftp._backends.http.body import BodyStream, Discard, causes, reason
from txfbtftp._backends.http.iorigin import IOrigin, OriginResponse, resumable
from txfbtftp._interfaces import ILifecycle
from txfbtftp._observe.logs import log
from txfbtftp._protocol import errors
from txfbtftp._types import IHTTPReactor

#: Characters a path segment may carry unencoded (RFC 3986 pchar, less ``;``,
#: which some servers take for parameters).
_SEGMENT_SAFE = "!$&'()*+,=:@"
#: ``Content-Range: bytes FIRST-LAST/TOTAL`` (TOTAL may be ``*``).
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
#: A 416's ``Content-Range: bytes */TOTAL``.
_UNSATISFIED = re.compile(r"^bytes\s+\*/(\d+)$")


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


def _as_uri(url: str) -> bytes:
    """``url`` as the ASCII bytes of a request line (an IRI's host in IDNA,
    its other characters percent-encoded)."""
    try:
        return EncodedURL.from_text(url).to_uri().to_text(with_password=True).encode("ascii")
    except ValueError:  # hyperlink cannot parse every host (an IPv6 literal's IDNA check)
        if url.isascii():
            return url.encode("ascii")
        raise ValueError("the base URL %r cannot be written as a URI" % url) from None


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
        self._agent = Agent(reactor, pool=self._pool, connectTimeout=timeout)
        self._base_uri = _as_uri(self.base)

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
        headers = Headers()
        if etag is not None:
            headers.setRawHeaders(b"If-None-Match", [etag.encode("latin-1")])
        if last_modified is not None:
            headers.setRawHeaders(b"If-Modified-Since", [last_modified.encode("latin-1")])
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
        if offset and not resumable(etag, last_modified):
            log.warn("{url}: cannot go on from byte {n}: the origin gave no ETag or Last-Modified to ask with",
                     url=url, n=offset)
            return fail(errors.TFTPError())
        headers = Headers({b"Range": [b"bytes=%d-" % offset]})
        if etag is not None and not etag.startswith("W/"):  # If-Range takes strong validators only
            headers.setRawHeaders(b"If-Range", [etag.encode("latin-1")])
        elif last_modified is not None:
            headers.setRawHeaders(b"If-Range", [last_modified.encode("latin-1")])
        return self._get(url, headers).addCallbacks(
            self._ranged, self._failed, callbackArgs=(url, offset, size, etag, last_modified), errbackArgs=(url,))

    def _get(self, url: str, headers: Headers) -> Deferred[IResponse]:
        """The response's headers within ``timeout``; a timeout cancels (CancelledError)."""
        headers.setRawHeaders(b"User-Agent", [b"txfbtftp"])
        uri = self._base_uri + url[len(self.base):].encode("ascii")  # the rest is percent-encoded
        d = self._agent.request(b"GET", uri, headers)
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
            # An origin may ignore If-Range: the part must carry the validators recorded.
            same = (match is not None and int(match.group(1)) == offset
                    and (size is None or match.group(3) in ("*", str(size)))
                    and (their_etag is not None and _weak(their_etag) == _weak(etag) if etag is not None
                         else last_modified is None or their_modified == last_modified))
            skip = 0
        elif code == 200:
            same = (size is None or length in (None, size)) and (
                their_etag == etag if etag is not None else last_modified is None or their_modified == last_modified)
            skip = offset
        elif code == 416 and _nothing_more(response, offset, size):
            response.deliverBody(Discard())
            return OriginResponse(416, 0, their_etag, their_modified)
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
        if _cancelled(failure):
            log.warn("{url}: no answer within {timeout}s", url=url, timeout=self.timeout)
        else:
            log.warn("{url}: {why}", url=url, why=reason(failure))
        raise errors.TFTPError()


def _cancelled(failure: Failure) -> bool:
    """Whether ``failure`` is the timeout's cancel, which arrives wrapped when
    the request was already sent (``ResponseNeverReceived([CancelledError])``)."""
    return any(f.check(CancelledError) for f in causes(failure))


def _weak(etag: str) -> str:
    return etag[2:] if etag.startswith("W/") else etag


def _nothing_more(response: IResponse, offset: int, size: int | None) -> bool:
    """Whether a 416 means the file ends at ``offset``: its ``Content-Range``
    says so (``bytes */offset``, and the file is still ``size`` long), or,
    the size being unknown, says nothing else."""
    match = _UNSATISFIED.match(_header(response, b"content-range") or "")
    if match is None:
        return size is None
    total = int(match.group(1))
    return total == offset and size in (None, total)


def _header(response: IResponse, name: bytes) -> str | None:
    values = response.headers.getRawHeaders(name)
    return values[0].decode("latin-1") if values else None
