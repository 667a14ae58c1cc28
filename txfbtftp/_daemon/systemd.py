"""Socket activation: the listening sockets systemd passes (``--systemd``)."""
from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def passed_sockets(environ: Mapping[str, str]) -> int | None:
    """How many sockets systemd passed this process (from descriptor 3), if it did.

    Twisted reads ``LISTEN_FDS`` when ``twisted.internet.endpoints`` is
    imported, and clears it (keeping the descriptors only when
    ``LISTEN_FDNAMES`` matches, as systemd sets it and
    ``systemd-socket-activate`` does not); so ask Twisted, and failing that
    count the datagram sockets from descriptor 3 on.
    """
    if environ.get("LISTEN_PID") == str(os.getpid()) and environ.get("LISTEN_FDS", "").isdigit():
        return int(environ["LISTEN_FDS"])
    from twisted.internet import endpoints
    kept = endpoints._SystemdParser._sddaemon.inheritedDescriptors()
    if kept:
        return len(kept)
    count = 0
    while True:
        try:
            probe = socket.socket(fileno=3 + count)
        except OSError:
            break
        kind = probe.type
        probe.detach()
        if kind != socket.SOCK_DGRAM:
            break
        count += 1
    return count or None
