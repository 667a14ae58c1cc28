"""Content generated in memory: a reader over bytes with a known size.

Generated files are small (boot menus, per-machine configs), so holding them
whole is cheaper than any streaming, and a known ``size`` lets clients get
``tsize``.
"""
from __future__ import annotations

from zope.interface import implementer

from txfbtftp.interfaces import IReader


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
