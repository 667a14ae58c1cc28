"""netascii (RFC 764 via RFC 1350): LF <-> CR LF and CR <-> CR NUL.

The codec only; :mod:`txfbtftp._netascii` wraps readers and writers
with it.
"""
from __future__ import annotations


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
