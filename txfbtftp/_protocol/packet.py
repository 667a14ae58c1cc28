"""TFTP packets on the wire (RFC 1350, RFC 2347).

Pure functions over bytes.  Requests and errors are decoded into small
objects; DATA and ACK are read in place by the session machines, which is why
this module also exports pre-packed headers for them.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6

# Error codes (RFC 1350, RFC 2347).
ERR_UNDEFINED = 0
ERR_NOT_FOUND = 1
ERR_ACCESS = 2
ERR_DISK_FULL = 3
ERR_ILLEGAL = 4
ERR_UNKNOWN_TID = 5
ERR_EXISTS = 6
ERR_NO_USER = 7
ERR_OPTIONS = 8

MAX_BLOCK = 0xFFFF

#: ``DATA_HEADERS[n]`` is the four header bytes of DATA block ``n``.
DATA_HEADERS: tuple[bytes, ...] = tuple(struct.pack("!HH", DATA, n) for n in range(MAX_BLOCK + 1))
#: ``ACK_PACKETS[n]`` is the whole ACK packet for block ``n``.
ACK_PACKETS: tuple[bytes, ...] = tuple(struct.pack("!HH", ACK, n) for n in range(MAX_BLOCK + 1))


class MalformedPacket(ValueError):
    """The datagram is not a TFTP packet we can make sense of."""


@dataclass(frozen=True)
class Request:
    """An RRQ or WRQ.

    ``options`` maps lower-cased option names to their values, in the order
    the client sent them; ``option_names`` keeps the client's spelling so the
    OACK can echo it.
    """

    opcode: int
    filename: str
    mode: str
    options: dict[str, str] = field(default_factory=dict)
    option_names: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""

    @property
    def is_read(self) -> bool:
        return self.opcode == RRQ


@dataclass(frozen=True)
class Error:
    code: int
    message: str


def opcode_of(data: bytes) -> int | None:
    """The opcode of ``data``, or None when it is too short to have one."""
    if len(data) < 2:
        return None
    return (data[0] << 8) | data[1]


def _text(raw: bytes) -> str:
    # Filenames are bytes on the wire; surrogateescape keeps them reversible.
    return raw.decode("utf-8", "surrogateescape")


def parse_request(data: bytes) -> Request:
    """Decode an RRQ/WRQ.

    Option names are case-insensitive (RFC 2347); the first occurrence of a
    repeated option wins; a trailing name without a value is ignored, as
    tftpd-hpa does.
    """
    op = opcode_of(data)
    if op not in (RRQ, WRQ):
        raise MalformedPacket("not a request")
    if data[-1:] != b"\x00":
        raise MalformedPacket("request not NUL-terminated")
    parts = data[2:-1].split(b"\x00")
    if len(parts) < 2:
        raise MalformedPacket("request without a mode")
    filename, mode = parts[0], parts[1]
    if not filename:
        raise MalformedPacket("empty filename")
    options: dict[str, str] = {}
    names: dict[str, str] = {}
    rest = parts[2:]
    for i in range(0, len(rest) - 1, 2):
        name = _text(rest[i])
        key = name.lower()
        if key and key not in options:
            options[key] = _text(rest[i + 1])
            names[key] = name
    return Request(op, _text(filename), _text(mode).lower(), options, names, data)


def parse_error(data: bytes) -> Error:
    if len(data) < 4 or opcode_of(data) != ERROR:
        raise MalformedPacket("truncated ERROR")
    code = (data[2] << 8) | data[3]
    msg = data[4:].split(b"\x00", 1)[0].decode("utf-8", "replace")
    return Error(code, msg)


def parse_oack(data: bytes) -> dict[str, str]:
    if opcode_of(data) != OACK:
        raise MalformedPacket("not an OACK")
    parts = data[2:].rstrip(b"\x00").split(b"\x00") if len(data) > 2 else []
    return {_text(parts[i]).lower(): _text(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}


def request(opcode: int, filename: str, mode: str = "octet", options: dict[str, str] | None = None) -> bytes:
    out = [struct.pack("!H", opcode), filename.encode("utf-8", "surrogateescape"), b"\x00",
           mode.encode("ascii"), b"\x00"]
    for k, v in (options or {}).items():
        out += [k.encode("utf-8"), b"\x00", str(v).encode("utf-8"), b"\x00"]
    return b"".join(out)


def data(block: int, payload: bytes) -> bytes:
    return DATA_HEADERS[block] + payload


def ack(block: int) -> bytes:
    return ACK_PACKETS[block]


def error(code: int, message: str) -> bytes:
    return struct.pack("!HH", ERROR, code) + message.encode("utf-8", "replace") + b"\x00"


def oack(options: dict[str, str]) -> bytes:
    out = [struct.pack("!H", OACK)]
    for k, v in options.items():
        out += [k.encode("utf-8", "surrogateescape"), b"\x00", str(v).encode("ascii"), b"\x00"]
    return b"".join(out)


#: The messages clients see for each code; never a path or a traceback.
MESSAGES = {
    ERR_UNDEFINED: "Server error",
    ERR_NOT_FOUND: "File not found",
    ERR_ACCESS: "Access violation",
    ERR_DISK_FULL: "Disk full or allocation exceeded",
    ERR_ILLEGAL: "Illegal TFTP operation",
    ERR_UNKNOWN_TID: "Unknown transfer ID",
    ERR_EXISTS: "File already exists",
    ERR_NO_USER: "No such user",
    ERR_OPTIONS: "Option negotiation failed",
}
