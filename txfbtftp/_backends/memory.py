"""Files in memory: a reader over bytes, and a backend over a dict.

Generated files are small (boot menus, per-machine configs), so holding them
whole is cheaper than any streaming, and a known ``size`` lets clients get
``tsize``.  :class:`MemoryBackend` serves a dict of such files, and takes
uploads into it when asked to: handy for tests and small embedded servers.
"""
from __future__ import annotations

from collections.abc import MutableMapping

from zope.interface import implementer

from txfbtftp._interfaces import IReader, IWritableBackend, IWriter, TransferRequest
from txfbtftp._protocol import errors


@implementer(IReader)
class BytesReader:
    """Reads ``data`` front to back; synchronous, so no Deferred per block."""

    __slots__ = ("size", "_data", "_offset")

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(bytes(data))
        self._offset = 0
        self.size = len(data)

    def read(self, n: int) -> bytes:
        chunk = self._data[self._offset:self._offset + n].tobytes()
        self._offset += len(chunk)
        return chunk

    def close(self) -> None:
        self._data = memoryview(b"")


@implementer(IWriter)
class _MemoryWriter:
    """Collects an upload; it enters the dict only on commit."""

    def __init__(self, files: MutableMapping[str, bytes], path: str) -> None:
        self._files = files
        self._path = path
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def commit(self) -> None:
        self._files[self._path] = b"".join(self._parts)

    def abort(self) -> None:
        self._parts = []


@implementer(IWritableBackend)
class MemoryBackend:
    """Serves ``files`` (path -> bytes; paths as requested, without a leading
    ``/``); uploads go into it when ``writable``, replacing files only when
    ``overwrite``."""

    def __init__(self, files: dict[str, bytes] | None = None, writable: bool = False,
                 overwrite: bool = False) -> None:
        self.files: dict[str, bytes] = {} if files is None else files
        self.writable = writable
        self.overwrite = overwrite

    def get_reader(self, path: str, request: TransferRequest) -> BytesReader:
        data = self.files.get(path.lstrip("/"))
        if data is None:
            raise errors.FileNotFound()
        return BytesReader(data)

    def get_writer(self, path: str, request: TransferRequest) -> _MemoryWriter:
        if not self.writable:
            raise errors.AccessViolation("Uploads are disabled")
        name = path.lstrip("/")
        if not self.overwrite and name in self.files:
            raise errors.FileExists()
        return _MemoryWriter(self.files, name)
