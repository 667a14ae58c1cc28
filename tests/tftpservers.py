"""Real TFTP servers no one here wrote, in the foreground on loopback, for the client's tests.

tftpd-hpa comes from its Debian package (``in.tftpd``).  atftpd's package
conflicts with tftpd-hpa's, so its binary is taken from the .deb itself:
``apt-get download atftpd`` and ``dpkg -x`` into ``.cache/atftpd`` at the top
of the repository (``.ci/run`` does the same; this module does it on first
use when apt-get can).  Each server gets a port of its own, never 69, so a
packaged service on port 69 changes nothing.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from .processes import free_port

REPO = pathlib.Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
ATFTPD = CACHE / "atftpd" / "usr" / "sbin" / "atftpd"


class Unavailable(Exception):
    """The server program is not installed and cannot be fetched here."""


def tftpd_hpa() -> str:
    path = shutil.which("in.tftpd") or ("/usr/sbin/in.tftpd" if os.path.exists("/usr/sbin/in.tftpd") else None)
    if path is None:
        raise Unavailable("in.tftpd not found (apt-get install tftpd-hpa)")
    return path


def atftpd() -> str:
    """The atftpd binary: the cached one, one on PATH, or one fetched now."""
    if ATFTPD.exists():
        return str(ATFTPD)
    found = shutil.which("atftpd")
    if found:
        return found
    if not (shutil.which("apt-get") and shutil.which("dpkg")):
        raise Unavailable("atftpd not found, and no apt-get to fetch it")
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(["apt-get", "download", "-q", "atftpd"], cwd=tmp, capture_output=True, timeout=300)
        debs = list(pathlib.Path(tmp).glob("atftpd_*.deb"))
        if got.returncode != 0 or not debs:
            raise Unavailable("apt-get download atftpd failed: %s" % got.stderr.decode(errors="replace")[-300:])
        (CACHE / "atftpd").mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg", "-x", str(debs[0]), str(CACHE / "atftpd")], check=True, timeout=60)
    if not ATFTPD.exists():
        raise Unavailable("the atftpd package holds no usr/sbin/atftpd")
    return str(ATFTPD)


class Server:
    """A server process serving ``root`` on ``host``:``port``."""

    def __init__(self, name: str, argv: list[str], host: str, port: int, root: pathlib.Path) -> None:
        self.name, self.host, self.port, self.root = name, host, port, root
        self.log = root.parent / ("%s-%d.log" % (name, port))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self._wait_ready()

    def _wait_ready(self, patience: float = 10.0) -> None:
        """Ready once it answers a request (for a file that is not there)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        end = time.monotonic() + patience
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(0.1)
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise RuntimeError("%s exited with %s: %s" % (self.name, self.proc.returncode,
                                                                 self.log.read_text(errors="replace")[-500:]))
                s.sendto(b"\0\1readiness-probe\0octet\0", (self.host, self.port))
                try:
                    s.recvfrom(1024)
                    return
                except OSError:
                    continue
        self.stop()
        raise RuntimeError("%s did not answer on %s port %d" % (self.name, self.host, self.port))

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_tftpd_hpa(root: pathlib.Path, host: str = "127.0.0.1") -> Server:
    """``in.tftpd -L`` (foreground), chrooted to ``root`` (``-s``), uploads
    allowed (``-c`` creates, ``-p`` leaves permissions to the file system),
    staying root (``-u root``) so the test's files are readable and writable."""
    port = free_port(host)
    address = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
    argv = [tftpd_hpa(), "-L", "-v", "-s", str(root), "-a", address, "-c", "-p", "-u", "root"]
    return Server("tftpd-hpa", argv, host, port, root)


def start_atftpd(root: pathlib.Path, host: str = "127.0.0.1") -> Server:
    """``atftpd --daemon --no-fork``: standalone in the foreground, as root."""
    port = free_port(host)
    log = root.parent / ("atftpd-%d.trace" % port)
    argv = [atftpd(), "--daemon", "--no-fork", "--port", str(port), "--bind-address", host, "--user", "root",
            "--group", "root", "--logfile", str(log), str(root)]
    return Server("atftpd", argv, host, port, root)
