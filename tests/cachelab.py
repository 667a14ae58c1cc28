"""Real servers on one cache directory, for the shared-cache tests: started as
an operator would (``txfbtftp serve --backend http:... --cache-dir``), with
the test's HTTP origin (:mod:`tests.httporigin`) running in the test's reactor."""
import json
import os
import random
import socket
import subprocess

import pytest
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from . import rawclient
from .processes import TXFBTFTP, Server, free_port


def body(seed, size):
    return random.Random(seed).randbytes(size)


def serve(servers, origin, cache_dir, workers=1, extra=()):
    """``txfbtftp serve`` on a port of its own, ready (every process listening)."""
    port, metrics = free_port(), free_port(kind=socket.SOCK_STREAM)
    argv = TXFBTFTP + ["serve", "--backend", "http:" + origin.base, "--cache-dir", str(cache_dir),
                       "--port", str(port), "--interface", "127.0.0.1", "--workers", str(workers),
                       "--metrics", "tcp:%d:interface=127.0.0.1" % metrics, "--stats-interval", "0", *extra]
    s = Server(argv)
    servers.append(s)
    s.port, s.metrics_port = port, metrics
    s.ready(count=workers)
    return s


@inlineCallbacks
def fetch(server, name, options=None, attempts=1):
    """``name`` from ``server``, verified by the caller; a client that gets no
    answer asks again (as firmware does) from the same port, ``attempts`` times."""
    c = rawclient.listen()
    c.transport.maxPacketSize = 65536
    try:
        for attempt in range(attempts):
            try:
                data, _, _ = yield rawclient.download(c, ("127.0.0.1", server.port), name,
                                                      options or {"blksize": "8192", "windowsize": "8"})
                return data
            except Exception:
                if attempt == attempts - 1:
                    raise
                while c.queue.pending:  # what the dead session left
                    c.queue.pending.pop()
    finally:
        yield c.close()


@inlineCallbacks
def metric(server, name):
    """The value of ``name`` on the server's /metrics."""
    import treq
    text = yield (yield treq.get("http://127.0.0.1:%d/metrics" % server.metrics_port)).text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def pause(seconds):
    return deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def settle(condition, timeout=20.0, what="condition"):
    """Wait, without blocking the origin, until ``condition()``."""
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError("%s not met within %ss" % (what, timeout))
        yield deferLater(reactor, 0.02, lambda: None)


def committed(cache_dir):
    """No fill is in progress: none listed in the index (a body is renamed
    into place before the index lists it) and no temporary file."""
    index, _, temporary = entries(cache_dir)
    return not temporary and not index["fills"]


def entries(cache_dir):
    """The index's entries, and the bodies and temporary files on disk."""
    index = json.loads((cache_dir / "index.json").read_text())
    data = sorted(n for n in os.listdir(cache_dir) if n.endswith(".data"))
    return index, data, sorted(os.listdir(cache_dir / "tmp"))


def filler_of(cache_dir, name):
    """The pid holding the lock of the fill of the file ``name`` (its
    filler: the lock is the truth, whichever process asked the origin), or
    None when there is no such fill."""
    index = json.loads((cache_dir / "index.json").read_text())
    parts = [f["part"] for f in index["fills"].values() if f["key"].endswith("/" + name)]
    if not parts:
        return None
    try:
        inode = os.stat(cache_dir / parts[0]).st_ino
    except FileNotFoundError:
        return None
    with open("/proc/locks") as f:
        for line in f:
            # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; "1: -> FLOCK ..." is a waiter
            fields = line.split()
            if len(fields) >= 6 and fields[1] == "FLOCK" and int(fields[5].rsplit(":", 1)[1]) == inode:
                return int(fields[4])
    return None


def pid_of_connection(local_port, pids):
    """Which of ``pids`` holds the TCP socket bound to ``local_port`` (the origin
    records each request's client port)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == local_port:
                    inodes.add("socket:[%s]" % fields[9])
    for pid in pids:
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    if os.readlink("/proc/%d/fd/%s" % (pid, fd)) in inodes:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def processes(server):
    """The server's main process and its workers."""
    def children(pid, pattern=None):
        args = ["pgrep", "-P", str(pid)] + (["-f", pattern] if pattern else [])
        return [int(p) for p in subprocess.run(args, capture_output=True, text=True).stdout.split()]
    main = server.proc.pid
    workers = [w for launcher in children(main, "txfbtftp._daemon.launcher") for w in children(launcher)]
    return main, workers


@inlineCallbacks
def wait_log(server, text, count=1, timeout=20):
    yield deferToThread(server.wait_for, text, timeout, count)


class Tmpfs:
    """A tmpfs of ``size`` mounted on ``path`` (needs root)."""

    def __init__(self, path, size):
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs: %s" % done.stderr.strip())
        self.path = path

    def fill(self, leave=0):
        """Write a ballast file until the disk is full (but ``leave`` bytes)."""
        st = os.statvfs(self.path)
        with open(self.path / "ballast", "wb") as f:
            room = st.f_bavail * st.f_frsize - leave
            try:
                while room > 0:
                    room -= f.write(b"\0" * min(room, 1 << 20))
                    f.flush()
            except OSError:
                pass

    def unmount(self):
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
