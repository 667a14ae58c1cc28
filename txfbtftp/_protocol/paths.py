"""Requested names, cleaned before any backend sees them.

Boot clients write names every which way (``\\Boot\\BCD``, ``/pxelinux.0``,
``pxelinux.cfg//default``); a backend should not have to.  The clean form:
``/`` separators, no leading ``/``, no empty or ``.`` component.  A name
with a ``..`` component, a NUL or another control character is refused
(ERROR 2), as is one too long to be a real client's (a classic request is a
512-byte datagram).
"""
from __future__ import annotations

from txfbtftp._protocol import errors

#: Longest name accepted, in UTF-8 bytes, and longest component.
MAX_NAME, MAX_COMPONENT = 512, 255


def normalize(raw: str) -> str:
    """The clean form of the requested name ``raw``; a TFTPError if refused."""
    if len(raw.encode("utf-8", "surrogateescape")) > MAX_NAME:
        raise errors.AccessViolation("File name too long")
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise errors.AccessViolation("Control characters in the file name")
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise errors.AccessViolation("Parent directories are not allowed")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_COMPONENT for p in parts):
        raise errors.AccessViolation("File name too long")
    if not parts:
        raise errors.FileNotFound()
    return "/".join(parts)
