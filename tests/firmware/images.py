"""Files the guests fetch: payloads of random bytes and initrds (cpio newc,
written here without the cpio program) whose ``/init`` proves what arrived.

The initrd holds a static busybox, ``/init`` and ``/payload``.  ``/init``
prints::

    txfbtftp-proof sha256=<hex of /payload> size=<bytes of /payload>

on the console (``console=ttyS0``) and powers the guest off.  The payload is
almost all of the initrd, so a hash that matches the one computed here means
the client received the file's bytes in order; a damaged header or busybox
stops the boot, which fails the test just as well.
"""
import hashlib
import io
import os
import stat

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc
/bin/busybox mount -t proc proc /proc
echo "txfbtftp-init: running"
set -- $(/bin/busybox sha256sum /payload)
echo "txfbtftp-proof sha256=$1 size=$(/bin/busybox stat -c %s /payload)"
/bin/busybox poweroff -f
"""

#: The proof line, whole (a line may reach the console in pieces).
PROOF = r"txfbtftp-proof sha256=([0-9a-f]{64}) size=(\d+)\n"


def random_file(path, size, chunk=1 << 22):
    """``size`` random bytes at ``path``; their sha256 (hex)."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(chunk, left))
            h.update(block)
            f.write(block)
            left -= len(block)
    return h.hexdigest()


class Cpio:
    """A cpio archive in the "newc" format the kernel unpacks."""

    def __init__(self, f):
        self.f = f
        self.ino = 300000

    def _pad(self):
        self.f.write(b"\0" * (-self.f.tell() % 4))

    def _header(self, name, mode, size, rdev=(0, 0), nlink=1):
        self.ino += 1
        fields = (self.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        self.f.write(b"070701" + b"".join(b"%08X" % v for v in fields) + name.encode() + b"\0")
        self._pad()

    def directory(self, name):
        self._header(name, stat.S_IFDIR | 0o755, 0, nlink=2)

    def device(self, name, major, minor):
        self._header(name, stat.S_IFCHR | 0o600, 0, rdev=(major, minor))

    def file(self, name, data=None, path=None, mode=0o644):
        """A regular file from ``data`` or copied from ``path``."""
        size = len(data) if data is not None else os.path.getsize(path)
        self._header(name, stat.S_IFREG | mode, size)
        if data is not None:
            self.f.write(data)
        else:
            with open(path, "rb") as src:
                while True:
                    block = src.read(1 << 22)
                    if not block:
                        break
                    self.f.write(block)
        self._pad()

    def close(self):
        self._header("TRAILER!!!", 0, 0)
        self.f.write(b"\0" * (-self.f.tell() % 512))


def _write_initrd(f, busybox, payload):
    cpio = Cpio(f)
    for d in ("bin", "dev", "proc"):
        cpio.directory(d)
    cpio.device("dev/console", 5, 1)
    cpio.file("bin/busybox", path=busybox, mode=0o755)
    cpio.file("init", data=INIT.encode(), mode=0o755)
    if payload is None:
        cpio.file("payload", data=b"")
    else:
        cpio.file("payload", path=payload)
    cpio.close()


def initrd(path, busybox, payload_size=0, total_size=None):
    """Write the proving initrd to ``path``; the payload's sha256 and size.

    With ``total_size``, the payload is sized so that the whole archive is
    at least ``total_size`` bytes (and less than 512 bytes more)."""
    if total_size is not None:
        empty = io.BytesIO()
        _write_initrd(empty, busybox, None)
        payload_size = max(payload_size, total_size - len(empty.getvalue()))
    payload = path + ".payload"
    digest = random_file(payload, payload_size)
    try:
        with open(path, "wb") as f:
            _write_initrd(f, busybox, payload)
    finally:
        os.unlink(payload)
    return digest, payload_size
