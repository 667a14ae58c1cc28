"""``--workers``: the limits hold for the server as a whole.

Server-wide limits (active sessions, the queue, the port range) are divided
among the processes; the limits per client address hold whole because the
kernel sends each address to one process (txfbtftp._net.steer).  Counted by
the test: a backend that records its open readers across processes
(tests/concurrency.py), and a silent client in another network namespace.
"""
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from txfbtftp import ServerConfig
from txfbtftp._daemon.worker import REPORT_INTERVAL

from . import concurrency, processes
from .processes import TWISTD, Client, free_port, free_ports

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def counting_server(servers, counts, *args):
    argv = TWISTD + ["-n", "--pidfile=", "tftp", "--backend",
                     "python:%s:counting:%s" % (os.path.join(HERE, "concurrency.py"), counts),
                     "--interface", "127.0.0.1", "--stats-interval", "0"] + list(args)
    s = processes.Server(argv, cwd=REPO)
    servers.append(s)
    return s


def wait_until(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def fetch_all(port, n, kib, pause=0.002, sources=None):
    """``n`` slow lock-step downloads at once; their results (bytes or an exception)."""
    results = [None] * n

    def one(i):
        c = Client(("127.0.0.1", port), timeout=10)
        if sources:
            c.sock.bind((sources[i % len(sources)], 0))
        try:
            results[i] = c.download("%d.bin" % kib, pause=lambda block: pause and threading.Event().wait(pause))
        except Exception as e:  # noqa: BLE001 - reported by the caller's assert
            results[i] = e
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_max_sessions_holds_across_three_workers(servers, tmp_path):
    counts = tmp_path / "counts"
    port = free_port()
    s = counting_server(servers, counts, "--port", str(port), "--workers", "3", "--max-sessions", "10")
    s.ready(count=3)
    results = fetch_all(port, 36, 40)
    assert results == [concurrency.pattern(40)] * 36
    wait_until(lambda: concurrency.read_counts(counts)[0] == 0)  # the last readers close after their ACK
    most = concurrency.read_counts(counts)[1]
    assert 6 <= most <= 10, most  # never more than 10, and the limit was reached for real
    by = {line.split("] ", 1)[1].split(":", 1)[0] if "] worker " in line else "main"
          for line in s.lines if "RRQ '40.bin'" in line}
    assert len(by) >= 2, by  # the transfers were spread over the processes


def test_the_port_range_is_divided_among_workers_and_clients_wait_for_ports(servers, tmp_path):
    """Twice as many clients at once as ports: the ones that find no port wait
    for one; nobody is told "busy"."""
    counts = tmp_path / "counts"
    port, low = free_port(), free_ports(8, ("127.0.0.1",))
    s = counting_server(servers, counts, "--port", str(port), "--workers", "2", "--port-range",
                        "%d:%d" % (low, low + 7))
    s.ready(count=2)
    assert fetch_all(port, 16, 20) == [concurrency.pattern(20)] * 16
    assert "busy" not in s.log.lower()


@pytest.mark.parametrize("args,words", [
    (["--workers", "3", "--max-sessions", "2"], "--max-sessions is shared by the --workers: give at least 3"),
    (["--workers", "4", "--port-range", "50000:50002"], "--port-range is shared by the --workers: give at least 4"),
])
def test_limits_too_small_to_divide_are_refused(args, words, tmp_path):
    done = subprocess.run(TWISTD + ["-n", "--pidfile=", "tftp", "--backend", "fs:%s" % tmp_path] + args,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 64 and "txfbtftp: " + words in done.stderr, done.stderr


def test_back_to_back_clients_as_many_as_ports_get_no_error(servers, tmp_path):
    """Ten clients, ten ports, each client asking again from a new port the
    moment its transfer ends: a new request may arrive before the final ACK
    that frees its port is read; it waits for that port, it is not refused."""
    counts, port, low = tmp_path / "counts", free_port(), free_ports(10, ("127.0.0.1",))
    s = counting_server(servers, counts, "--port", str(port), "--port-range", "%d:%d" % (low, low + 9))
    s.ready()
    results = []

    def rounds():
        results.append(fetch_all(port, 10, 4, pause=0))

    runners = [threading.Thread(target=rounds) for _ in range(3)]
    for t in runners:
        t.start()
    for t in runners:
        t.join(120)
    assert [r for batch in results for r in batch] == [concurrency.pattern(4)] * 30
    assert concurrency.read_counts(counts)[1] <= 10
    assert "busy" not in s.log.lower()


def test_ports_held_by_another_program_make_requests_wait_not_fail(servers, tmp_path):
    """Six of the range's eight ports are taken by someone else: six clients
    at once share the two left, one after another, and nobody hears "busy"."""
    counts, port, metrics = tmp_path / "counts", free_port(), free_port()
    low = free_ports(8, ("127.0.0.1",))
    squatters = []
    for p in range(low, low + 6):
        sq = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sq.bind(("127.0.0.1", p))
        squatters.append(sq)
    try:
        s = counting_server(servers, counts, "--port", str(port), "--port-range", "%d:%d" % (low, low + 7),
                            "--metrics", "tcp:%d:interface=127.0.0.1" % metrics)
        s.ready()
        assert fetch_all(port, 6, 16) == [concurrency.pattern(16)] * 6
    finally:
        for sq in squatters:
            sq.close()
    assert concurrency.read_counts(counts)[1] <= 2
    page = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics, timeout=10).read().decode()
    waited = float(page.split("\ntftp_requests_waiting_for_port_total ", 1)[1].split()[0])
    assert waited >= 1 and "\ntftp_requests_refused_busy_total 0.0" in page
    assert "busy" not in s.log.lower()


@pytest.mark.parametrize("index,sessions,queue,ports", [
    (0, 4, 342, (41000, 41003)), (1, 3, 341, (41004, 41006)), (2, 3, 341, (41007, 41009)),
])
def test_a_process_share_of_the_limits(index, sessions, queue, ports):
    config = ServerConfig(max_sessions=10, max_queue=1024, port_range=(41000, 41009), max_sessions_per_client=2)
    part = config.share(index, 3)
    assert (part.max_sessions, part.max_queue, part.port_range) == (sessions, queue, ports)
    assert part.max_sessions_per_client == 2 and part.max_unverified_per_source == 16
    assert config.share(0, 1) is config
    assert ServerConfig().share(1, 3).max_sessions == 0  # no limit stays no limit


def test_a_worker_killed_mid_transfer_loses_nobody_elses_transfers(servers, tmp_path):
    """Kill -9 a worker while every process has transfers in flight: it is
    restarted, the others finish theirs, and the totals count the lost ones."""
    counts = tmp_path / "counts"
    port, metrics = free_port(), free_port()
    s = counting_server(servers, counts, "--port", str(port), "--workers", "2", "--metrics",
                        "tcp:%d:interface=127.0.0.1" % metrics)
    s.ready(count=2)
    results = []
    runner = threading.Thread(target=lambda: results.extend(fetch_all(port, 20, 200, pause=0.004)))
    runner.start()
    wait_until(lambda: os.path.exists(counts) and concurrency.read_counts(counts)[0] == 20)
    time.sleep(REPORT_INTERVAL * 2)  # the worker has told the main process how many it serves
    worker = next(int(line.split("(pid ", 1)[1].split(")")[0]) for line in s.lines if "worker 1 started (pid" in line)
    os.kill(worker, signal.SIGKILL)
    runner.join(120)
    ok = [r for r in results if r == concurrency.pattern(200)]
    failed = [r for r in results if r != concurrency.pattern(200)]
    assert ok and failed and len(ok) + len(failed) == 20
    s.wait_for("worker 1 exited with")
    lost = int(s.log.split("worker 1 exited with ", 1)[1].split()[0])
    assert lost == len(failed)
    s.wait_for("listening", count=3)  # the restarted worker
    assert fetch_all(port, 6, 8, pause=0) == [concurrency.pattern(8)] * 6
    page = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics, timeout=10).read().decode()
    assert "tftp_sessions_lost_total %.1f" % lost in page


def test_a_worker_reports_changes_not_on_a_timer():
    """A timer polling for changes would wake the worker (and the main
    process, and end their parks) ten times a second for nothing: a worker
    reports only new records, counters or a change in its active sessions,
    the first change at once, later ones at most ten times a second."""
    from types import SimpleNamespace

    from twisted.internet.task import Clock

    from txfbtftp._daemon.worker import REPORT_INTERVAL, _Reporter
    from txfbtftp._observe.stats import ServerStats

    sent = []
    channel = SimpleNamespace(records=[], send=sent.append)
    stats, clock = ServerStats(), Clock()
    report = _Reporter(channel, SimpleNamespace(stats=stats), clock)
    report()
    assert sent == [{"records": [], "counters": {}, "active": 0}]  # the first says where it stands
    clock.advance(10)
    assert clock.getDelayedCalls() == [] and len(sent) == 1  # idle: no timer, nothing said
    stats.session_started()
    assert len(sent) == 1
    clock.advance(0)  # after a quiet spell, at once
    assert sent[1:] == [{"records": [], "counters": {"sessions_started": 1}, "active": 1}]
    stats.increment_counter("errors_suppressed")
    stats.increment_counter("errors_suppressed")
    clock.advance(REPORT_INTERVAL / 2)
    assert len(sent) == 2  # soon after the last report: gathered until its interval is up
    clock.advance(REPORT_INTERVAL / 2)
    assert sent[2:] == [{"records": [], "counters": {"errors_suppressed": 2}, "active": 1}]
    assert clock.getDelayedCalls() == []
    stats.active = 2
    report()
    channel.records.append({"client": "192.0.2.1"})
    report()
    report()
    assert sent[3:] == [{"records": [], "counters": {}, "active": 2},
                        {"records": [{"client": "192.0.2.1"}], "counters": {}, "active": 2}]
    stats.increment_counter("errors_suppressed")
    report.stop()
    clock.advance(1)
    assert len(sent) == 5  # stopped: the pending report is the caller's to send
