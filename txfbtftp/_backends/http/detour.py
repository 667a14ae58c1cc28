"""A download that goes on straight from the origin, from where it stands.

When the cache cannot keep what it was writing (the disk filled up, a
write failed, the file outgrew the cache) the readers of that fill must not
fail while the origin answers: each asks the origin for the rest of the
file from its own offset (:meth:`~txfbtftp._backends.http.iorigin.IOrigin.fetch_range`:
a Range request that the origin honours only if the file is still the one
being served).  Each such reader costs one request and one stream of its
own; none of it is written to disk.
"""
from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred, maybeDeferred
from zope.interface import implementer

from txfbtftp._backends.http.iorigin import IBody, IOrigin, OriginResponse
from txfbtftp._interfaces import IReader, MaybeDeferred


@dataclass(frozen=True)
class Source:
    """Where a fill's body comes from, and which version of it."""

    origin: IOrigin
    path: str
    size: int | None
    etag: str | None
    last_modified: str | None


@implementer(IReader)
class Detour:
    """The rest of ``source``'s body from byte ``offset``, asked for on the first read."""

    __slots__ = ("size", "_source", "_offset", "_body", "_closed", "_eof")

    def __init__(self, source: Source, offset: int) -> None:
        self.size = source.size
        self._source = source
        self._offset = offset
        self._body: IBody | None = None
        self._closed = False
        self._eof = source.size is not None and offset >= source.size

    def read(self, n: int) -> MaybeDeferred[bytes]:
        if self._body is not None:
            return self._body.read(n)
        if self._eof:
            return b""
        s = self._source
        d: Deferred[OriginResponse] = maybeDeferred(s.origin.fetch_range, s.path, self._offset, s.size, s.etag,
                                                    s.last_modified)
        return d.addCallback(self._opened, n)

    def _opened(self, response: OriginResponse, n: int) -> MaybeDeferred[bytes]:
        body = response.body
        if body is None:  # 416: the file ended where we stand
            self._eof = True
            return b""
        if self._closed:
            body.close()
            return b""
        self._body = body
        return body.read(n)

    def close(self) -> None:
        self._closed = True
        if self._body is not None:
            self._body.close()
