"""Where a download goes and where an upload comes from: the same seams a
backend has (:class:`~txfbtftp.IWriter`, :class:`~txfbtftp.IReader`).

So the driver handles one kind of sink and one kind of source, netascii is
the server's wrapper around either, and an application may hand the client
a backend's reader or writer as it is (to mirror a file between servers).
Bytes in memory, binary files and Twisted consumers are adapted here.
"""
from __future__ import annotations

import io
import os
import stat
from typing import Any, Protocol, TypeAlias

from twisted.internet.interfaces import IConsumer, IPushProducer
from zope.interface import implementer

from txfbtftp._interfaces import IReader, IWriter


class Writable(Protocol):
    """A binary file open for writing (only ``write`` is used)."""

    def write(self, data: bytes, /) -> Any: ...


class Readable(Protocol):
    """A binary file open for reading (only ``read`` is used)."""

    def read(self, n: int, /) -> bytes: ...


#: What ``get(to=...)`` takes.
Sink: TypeAlias = "IWriter | IConsumer | Writable"
#: What ``put`` sends.
Source: TypeAlias = "bytes | IReader | Readable"


@implementer(IWriter)
class MemoryWriter:
    """Keeps the download, for :attr:`ClientResult.data <txfbtftp.ClientResult.data>`."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        self.chunks = []

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


@implementer(IWriter)
class FileWriter:
    """Writes into a file the caller opened and will close (and, on a
    failure, remove or truncate: what a partial file means is theirs to say)."""

    def __init__(self, file: Writable) -> None:
        self._file = file

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> None:
        flush = getattr(self._file, "flush", None)
        if flush is not None:
            flush()

    def abort(self) -> None:
        pass


@implementer(IWriter)
class ConsumerWriter:
    """Feeds an :class:`~twisted.internet.interfaces.IConsumer`; the transfer
    is its streaming producer, so a consumer that pauses stops the reading
    (the server's retransmissions wait in its socket buffer)."""

    def __init__(self, consumer: IConsumer) -> None:
        self._consumer = consumer
        self._registered = False

    def attach(self, producer: IPushProducer) -> None:
        self._consumer.registerProducer(producer, True)
        self._registered = True

    def write(self, data: bytes) -> None:
        self._consumer.write(data)

    def commit(self) -> None:
        self._detach()

    def abort(self) -> None:
        self._detach()

    def _detach(self) -> None:
        if self._registered:
            self._registered = False
            self._consumer.unregisterProducer()


@implementer(IReader)
class FileReader:
    """Reads a binary file (or ``bytes``) in exact blocks: a short read from
    a pipe must not end the upload early."""

    def __init__(self, file: Readable, size: int | None = None) -> None:
        self._file = file
        self.size = size if size is not None else _remaining(file)

    def read(self, n: int) -> bytes:
        data = self._file.read(n)
        while 0 < len(data) < n:
            more = self._file.read(n - len(data))
            if not more:
                break
            data += more
        return data

    def close(self) -> None:
        pass


def _remaining(file: Readable) -> int | None:
    """The bytes left in a regular file, or None (a pipe, a socket)."""
    try:
        st = os.fstat(file.fileno())  # type: ignore[attr-defined]
        if not stat.S_ISREG(st.st_mode):
            return None
        return max(0, st.st_size - file.tell())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


def writer_for(sink: Sink | None) -> IWriter:
    """``sink`` as an IWriter (None: into memory)."""
    if sink is None:
        return MemoryWriter()
    if IWriter.providedBy(sink):
        return sink
    if IConsumer.providedBy(sink):
        return ConsumerWriter(sink)
    if callable(getattr(sink, "write", None)):
        return FileWriter(sink)
    raise TypeError("a download goes to an IWriter, an IConsumer or a binary file, not %r" % (sink,))


def reader_for(source: Source) -> IReader:
    """``source`` as an IReader."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return FileReader(io.BytesIO(bytes(source)), len(source))
    if IReader.providedBy(source):
        return source
    if callable(getattr(source, "read", None)):
        return FileReader(source)
    raise TypeError("an upload comes from bytes, an IReader or a binary file, not %r" % (source,))
