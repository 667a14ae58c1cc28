"""netascii around a reader or writer, for the server's sessions and the client.

Backends (and the client's sources and sinks) deal in local bytes only and
the protocol machines in wire bytes only; these wrappers convert between the
two with the codec of :mod:`txfbtftp._protocol.netascii`, passing Deferreds
through.  Both drivers use them, so they live below both.
"""
from __future__ import annotations


from twisted.internet.defer import Deferred
from zope.interface import implementer

from txfbtftp._interfaces import IReader, IWriter, MaybeDeferred
from txfbtftp._protocol.netascii import Decoder, encode


@implementer(IReader)
class NetasciiReader:
    """Presents a reader's bytes in netascii, in exact ``n``-byte reads.

    ``size`` is None: the converted size is not known without reading the
    whole file, so tsize is not offered in netascii.
    """

    size: int | None = None

    def __init__(self, reader: IReader, chunk: int = 65536) -> None:
        self._reader = reader
        self._chunk = chunk
        self._buf = b""
        self._pos = 0
        self._eof = False

    def read(self, n: int) -> MaybeDeferred[bytes]:
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

    def _more(self, raw: bytes, n: int) -> MaybeDeferred[bytes]:
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

    def __init__(self, writer: IWriter) -> None:
        self._writer = writer
        self._decoder = Decoder()

    def write(self, data: bytes) -> Deferred[None] | None:
        return self._writer.write(self._decoder.feed(data))

    def commit(self) -> Deferred[None] | None:
        tail = self._decoder.flush()
        if tail:
            d = self._writer.write(tail)
            if isinstance(d, Deferred):
                return d.addCallback(lambda _: self._writer.commit())
        return self._writer.commit()

    def abort(self) -> None:
        self._writer.abort()
