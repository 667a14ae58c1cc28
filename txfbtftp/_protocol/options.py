"""Option negotiation (RFC 2347, 2348, 2349, 7440, and tftpd-hpa's extras).

A pure function of the request, the server's limits and the file size.
Unknown options and invalid values are ignored, never echoed; the OACK holds
only what was accepted, in the client's order and spelling.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from txfbtftp._protocol import errors
from txfbtftp._protocol.packet import Request

MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464
DEFAULT_BLKSIZE = 512
#: The default cap on a window's bytes: every firmware's window fits (EDK2
#: asks 4 x 1468, U-Boot up to 64 x 1468), and a burst to an unverified peer
#: stays small.
DEFAULT_WINDOW_BYTES = 128 * 1024
#: RFC 7440 allows 65535, but past half the block-number space an old ACK
#: cannot be told from a new one.
MAX_WINDOWSIZE = 32767


@dataclass(frozen=True)
class Limits:
    """What the server is willing to grant."""

    max_blksize: int = MAX_BLKSIZE
    max_windowsize: int = 64
    max_upload_size: int | None = None
    #: A window's payload at most (windowsize x blksize): the windowsize is
    #: negotiated down to fit, never below 1.
    max_window_bytes: int = DEFAULT_WINDOW_BYTES

    def __post_init__(self) -> None:
        if not MIN_BLKSIZE <= self.max_blksize <= MAX_BLKSIZE:
            raise ValueError("max blksize must be within %d..%d" % (MIN_BLKSIZE, MAX_BLKSIZE))
        if not 1 <= self.max_windowsize <= MAX_WINDOWSIZE:
            raise ValueError("max windowsize must be within 1..%d" % MAX_WINDOWSIZE)
        if self.max_upload_size is not None and self.max_upload_size < 0:
            raise ValueError("max upload size must not be negative")
        if self.max_window_bytes < MIN_BLKSIZE:
            raise ValueError("max window bytes must be at least %d" % MIN_BLKSIZE)


@dataclass
class Negotiated:
    blksize: int = DEFAULT_BLKSIZE
    windowsize: int = 1
    #: Retransmission base chosen by the client (``timeout``/``utimeout``), seconds.
    timeout: float | None = None
    tsize: int | None = None
    rollover: int = 0
    #: The OACK's contents; empty means no OACK is sent.
    accepted: dict[str, str] = field(default_factory=dict)


def _int(value: str) -> int | None:
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 20:
        return None
    return int(value)


def negotiate(req: Request, limits: Limits, size: int | None = None) -> Negotiated:
    """Decide the session's parameters.

    ``size`` is the reader's size for an RRQ (None when unknown or when the
    mode changes it).  For a WRQ, a ``tsize`` over the upload limit raises
    :class:`txfbtftp.errors.DiskFull` before any data is accepted.
    """
    out = Negotiated()
    acc = out.accepted
    windowsize = None
    for key, value in req.options.items():
        name = req.option_names.get(key, key)
        n = _int(value)
        if key == "blksize":
            if n is not None and n >= MIN_BLKSIZE:
                out.blksize = min(n, limits.max_blksize, MAX_BLKSIZE)
                acc[name] = str(out.blksize)
        elif key == "windowsize":
            if n is not None and n >= 1:
                windowsize = (name, n)
                acc[name] = ""  # in the client's order; the value once blksize is known
        elif key == "timeout":
            if n is not None and 1 <= n <= 255:
                out.timeout = float(n)
                acc[name] = str(n)
        elif key == "utimeout":
            if n is not None and 10_000 <= n <= 255_000_000:
                out.timeout = n / 1e6
                acc[name] = str(n)
        elif key == "tsize":
            if n is None:
                continue
            if req.is_read:
                if size is not None:
                    out.tsize = size
                    acc[name] = str(size)
            else:
                if limits.max_upload_size is not None and n > limits.max_upload_size:
                    raise errors.DiskFull("File too large (limit %d bytes)" % limits.max_upload_size)
                out.tsize = n
                acc[name] = str(n)
        elif key == "rollover":
            if n in (0, 1):
                out.rollover = n
                acc[name] = str(n)
    if windowsize is not None:
        name, n = windowsize
        fit = max(1, limits.max_window_bytes // out.blksize)
        out.windowsize = min(n, limits.max_windowsize, fit)
        acc[name] = str(out.windowsize)
    return out
