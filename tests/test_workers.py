"""``--workers``: several processes serve one port, and their statistics add up."""
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater

from .processes import free_port
from .rawclient import download, listen

TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]


def _children(pid, pattern=None):
    args = ["pgrep", "-P", str(pid)] + (["-f", pattern] if pattern else [])
    return [int(p) for p in subprocess.run(args, capture_output=True, text=True).stdout.split()]


def children(pid):
    """The worker processes: forked by the launcher the main process started."""
    return [w for launcher in _children(pid, "txfbtftp._daemon.launcher") for w in _children(launcher)]


@pytest.fixture
def cluster(root, tmp_path):
    port, metrics = free_port(), free_port(kind=socket.SOCK_STREAM)
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(TWISTD + ["-n", "--pidfile=", "tftp", "--backend", "fs:%s" % root, "--port", str(port),
                                      "--interface", "127.0.0.1", "--workers", "2", "--metrics", "tcp:%d" % metrics,
                                      "--stats-interval", "0"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path), start_new_session=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        text = (tmp_path / "server.log").read_text(errors="replace")
        if "worker 1:" in text and "listening" in text.split("worker 1:", 1)[1]:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("server did not start:\n" + (tmp_path / "server.log").read_text(errors="replace"))
    yield port, metrics, tmp_path / "server.log", proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest_twisted.inlineCallbacks
def test_workers_serve_concurrently_and_statistics_add_up(cluster, root):
    port, metrics, logfile, proc = cluster
    clients = [listen() for _ in range(40)]
    pending = [download(c, ("127.0.0.1", port), "small.bin", {"blksize": "1468"}) for c in clients]
    for d in pending:
        data, _, _ = yield d
        assert data == (root / "small.bin").read_bytes()
    for c in clients:
        yield c.close()
    yield deferLater(reactor, 1.5, lambda: None)  # workers report twice a second
    lines = [line for line in logfile.read_text(errors="replace").splitlines() if "RRQ 'small.bin'" in line]
    by_worker = sum("worker 1:" in line for line in lines)
    assert len(lines) == 40 and 0 < by_worker < 40, "both processes served: %d of 40 by the worker" % by_worker
    body = yield (yield treq.get("http://127.0.0.1:%d/metrics" % metrics)).text()
    started = re.search(r"^tftp_sessions_started_total (\S+)$", body, re.M)
    assert started and float(started.group(1)) == 40
    done = re.findall(r'^tftp_sessions_total\{[^}]*outcome="ok"[^}]*\} (\S+)$', body, re.M)
    assert sum(float(x) for x in done) == 40


def test_a_worker_that_dies_is_restarted(cluster):
    port, metrics, logfile, proc = cluster
    workers = children(proc.pid)
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline:
        if "restarting" in logfile.read_text(errors="replace"):
            if [p for p in children(proc.pid) if p != workers[0]]:
                return
        time.sleep(0.1)
    pytest.fail("worker not restarted:\n" + logfile.read_text(errors="replace")[-2000:])


def test_a_worker_line_that_is_not_a_json_object_is_ignored(tmp_path):
    from twisted.internet.task import Clock

    from txfbtftp import MemoryBackend, TFTPService
    from txfbtftp._daemon.options import Options
    from txfbtftp._daemon.pool import WorkerPool, _Channel

    options = Options()
    options.parseOptions(["--backend", "fs:%s" % tmp_path, "--workers", "2"])
    pool = WorkerPool(Clock(), options, TFTPService(MemoryBackend(), Clock()))
    channel = _Channel(pool, 1)
    for line in (b"42", b"null", b"[1]", b"not json"):
        channel.lineReceived(line)
    channel.lineReceived(b'{"counters": {"sessions_started": 3}, "active": 2, "hello": 4242}')
    assert pool.stats.get_counter("sessions_started") == 3 and pool.stats.sessions_active == 2
    assert channel.pid == 4242
