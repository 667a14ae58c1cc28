"""``tftp://`` URLs as curl reads them."""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

DEFAULT_PORT = 69
MODES = ("octet", "netascii")


@dataclass(frozen=True)
class TFTPURL:
    """Where a file is: ``tftp://host[:port]/path[;mode=netascii]``.

    As with curl, the first slash after the host only separates it from the
    path (``tftp://h/boot/x`` asks for ``boot/x``; ``tftp://h//boot/x`` for
    ``/boot/x``), the path is percent-decoded, an IPv6 address stands in
    brackets (``tftp://[::1]:6969/x``), and ``;mode=`` picks the mode.
    """

    host: str
    path: str
    port: int = DEFAULT_PORT
    #: The mode the URL asks for, or None when it does not say.
    mode: str | None = None

    @classmethod
    def parse(cls, url: str) -> TFTPURL:
        """Raise ValueError, with the reason, for anything but a usable URL."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() != "tftp":
            raise ValueError("not a tftp:// URL: %r" % url)
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("a tftp:// URL has no user, query or fragment: %r" % url)
        host = parts.hostname
        if not host:
            raise ValueError("no host in %r" % url)
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ValueError("bad port in %r" % url) from None
        raw = parts.path[1:]
        mode = None
        base, sep, tail = raw.rpartition(";mode=")
        if sep:
            mode = tail.lower()
            if mode not in MODES:
                raise ValueError("unknown mode %r in %r (octet or netascii)" % (tail, url))
            raw = base
        path = urllib.parse.unquote(raw, errors="surrogateescape")
        if not path:
            raise ValueError("no file name in %r" % url)
        return cls(host, path, port, mode)

    def __str__(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        port = "" if self.port == DEFAULT_PORT else ":%d" % self.port
        mode = "" if self.mode is None else ";mode=%s" % self.mode
        path = urllib.parse.quote(self.path, safe="/", errors="surrogateescape")
        return "tftp://%s%s/%s%s" % (host, port, path, mode)
