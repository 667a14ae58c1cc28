"""Sending a window in as few system calls as the kernel allows.

A window's DATA packets all have the same size but for a shorter last one,
which is exactly what UDP segmentation offload (Linux 4.18+) takes: one
``sendmsg`` of the packets back to back with a UDP_SEGMENT size, and the
kernel cuts them apart.  A window then costs one system call instead of one
per block.  Where the kernel refuses, the sender remembers it and sends one
by one from then on.
"""
from __future__ import annotations

import errno
import socket
import struct
from typing import Any

UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
_MAX_SEGMENTS = 64
_MAX_BYTES = 65000
_NO_OFFLOAD = (errno.EINVAL, errno.ENOPROTOOPT, errno.EIO, errno.EOPNOTSUPP)


class BatchSender:
    """Sends runs of equal-sized packets with segmentation offload while the
    kernel takes it.  One per poller: what it learns holds for its sockets."""

    __slots__ = ("offload", "_ancillary")

    def __init__(self, offload: bool = True) -> None:
        #: False once the kernel refused a segmented send.
        self.offload = offload
        self._ancillary: dict[int, list[tuple[int, int, bytes]]] = {}

    def send(self, sock: socket.socket, dest: tuple[Any, ...], packets: list[bytes]) -> None:
        """Send ``packets`` to ``dest`` in order, best effort: a full buffer
        is a lost packet, which the watchdog resends."""
        n = len(packets)
        i = 0
        while i < n:
            first = packets[i]
            size = len(first)
            j = i + 1
            if self.offload:
                most = min(n, i + _MAX_SEGMENTS, i + max(1, _MAX_BYTES // size))
                while j < most and len(packets[j]) == size:
                    j += 1
                if j < most and len(packets[j]) < size:
                    j += 1  # a shorter packet may end a run
            try:
                if j - i == 1:
                    sock.sendto(first, dest)
                else:
                    anc = self._ancillary.get(size)
                    if anc is None:
                        anc = self._ancillary[size] = [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
                    sock.sendmsg([b"".join(packets[i:j])], anc, 0, dest)
            except OSError as e:
                if j - i > 1 and e.errno in _NO_OFFLOAD:
                    self.offload = False
                    continue
            i = j
