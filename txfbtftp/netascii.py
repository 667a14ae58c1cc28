"""netascii (RFC 764 via RFC 1350): LF <-> CR LF and CR <-> CR NUL.

Conversion wraps the backend's reader or writer, so backends deal in local
bytes only and the session machines in wire bytes only.
"""
from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred
from zope.interface import implementer

from txfbtftp.interfaces import IReader, IWriter


def encode(data: bytes) -> bytes:
    return data.replace(b"\r", b"\r\x00").replace(b"\n", b"\r\n")


class Decoder:
    """Stateful CR LF -> LF, CR NUL -> CR, across block boundaries."""

    def __init__(self) -> None:
        self._cr = False

    def feed(self, data: bytes) -> bytes:
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._cr = True
        return data.replace(b"\r\n", b"\n").replace(b"\r\x00", b"\r")

    def flush(self) -> bytes:
        """What is left at the end: a lone CR stays a CR."""
        out = b"\r" if self._cr else b""
        self._cr = False
        return out


@implementer(IReader)
class NetasciiReader:
    """Presents a reader's bytes in netascii, in exact ``n``-byte reads.

    ``size`` is None: the converted size is not known without reading the
    whole file, so tsize is not offered in netascii.
    """

    size: Optional[int] = None

    def __init__(self, reader: Any, chunk: int = 65536) -> None:
        self._reader = reader
        self._chunk = chunk
        self._buf = b""
        self._pos = 0
        self._eof = False

    def read(self, n: int) -> Any:
        while len(self._buf) - self._pos < n and not self._eof:
            raw = self._reader.read(self._chunk)
            if isinstance(raw, Deferred):
                return raw.addCallback(self._more, n)
            self._take(raw)
        return self._cut(n)

    def _take(self, raw: bytes) -> None:
        if len(raw) < self._chunk:
            self._eof = True
        self._buf = self._buf[self._pos:] + encode(raw)
        self._pos = 0

    def _more(self, raw: bytes, n: int) -> Any:
        self._take(raw)
        return self.read(n)

    def _cut(self, n: int) -> bytes:
        pos = self._pos
        self._pos = pos + n
        return self._buf[pos:pos + n]

    def close(self) -> None:
        self._reader.close()


@implementer(IWriter)
class NetasciiWriter:
    """Decodes netascii into local bytes before the wrapped writer sees them."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer
        self._decoder = Decoder()

    def write(self, data: bytes) -> Any:
        return self._writer.write(self._decoder.feed(data))

    def commit(self) -> Any:
        tail = self._decoder.flush()
        if tail:
            d = self._writer.write(tail)
            if isinstance(d, Deferred):
                return d.addCallback(lambda _: self._writer.commit())
        return self._writer.commit()

    def abort(self) -> None:
        self._writer.abort()
