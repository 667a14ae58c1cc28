"""Session records, server counters, the periodic report, and the logs that carry them."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from txfbtftp._protocol import packet
from txfbtftp import ServerConfig
from txfbtftp import Schedule
from txfbtftp import REASONS, ServerStats, log_server_stats

from .rawclient import download, listen
from .processes import free_port
from .stathelp import addr, check_times, sleep, wait_for
from .test_quirks import HybridReactor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Events:
    """Log events published while in the ``with`` block."""

    def __enter__(self):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        return self.events

    def __exit__(self, *exc):
        globalLogPublisher.removeObserver(self.events.append)


def common(svc, client, **rest):
    base = dict(client="127.0.0.1", client_port=client.transport.getHost().port, local="127.0.0.1",
                local_port=svc.bound_port, mode="octet", tsize_probe=False)
    base.update(rest)
    return base


# -- the session record ---------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_record_of_a_download(service, root):
    records = []
    svc = service(session_stats_callback=records.append)
    c = listen()
    opts = {"blksize": "1000", "tsize": "0", "windowsize": "2"}
    data, _, _ = yield download(c, addr(svc), "small.bin", opts)
    assert data == (root / "small.bin").read_bytes()
    yield wait_for(records)
    rec = records[0]
    assert check_times(rec) == common(
        svc, c, path="small.bin", direction="read",
        options_requested=opts, options_acknowledged={"blksize": "1000", "tsize": "5000", "windowsize": "2"},
        blksize=1000, windowsize=2, tsize=5000,
        bytes_transferred=5000, bytes_sent=5000,
        packets_sent=7,        # OACK, DATA 1-6 (the sixth is empty)
        packets_received=4,    # ACK 0, 2, 4, 6
        retransmits=0, duplicates=0, outcome="ok", error_code=None, error_message="")
    assert rec.reason == "ok"
    assert svc.stats.active == 0
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_record_of_an_upload(service, root):
    records = []
    svc = service(session_stats_callback=records.append)
    c = listen()
    payload = os.urandom(1300)
    c.send(packet.request(packet.WRQ, "up.bin", "octet", {"tsize": "1300"}), addr(svc))
    data, tid = yield c.recv()
    assert packet.parse_oack(data) == {"tsize": "1300"}
    for n, off in enumerate(range(0, 1536, 512), 1):
        c.send(packet.data(n, payload[off:off + 512]), tid)
        assert (yield c.recv())[0] == packet.ack(n)
    c.send(packet.data(2, payload[512:1024]), tid)  # a stray duplicate while dallying
    yield wait_for(records)
    assert (root / "up.bin").read_bytes() == payload
    assert check_times(records[0]) == common(
        svc, c, path="up.bin", direction="write",
        options_requested={"tsize": "1300"}, options_acknowledged={"tsize": "1300"},
        blksize=512, windowsize=1, tsize=1300,
        bytes_transferred=1300, bytes_sent=0,
        packets_sent=4,        # OACK, ACK 1-3
        packets_received=4, retransmits=0, duplicates=1,
        outcome="ok", error_code=None, error_message="")
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_record_of_a_client_abort(service):
    records = []
    svc = service(session_stats_callback=records.append)
    c = listen()
    c.send(packet.request(packet.RRQ, "small.bin", "octet"), addr(svc))
    _, tid = yield c.recv()
    c.send(packet.ack(1), tid)
    yield c.recv()
    c.send(packet.error(0, "changed my mind"), tid)
    yield wait_for(records)
    assert check_times(records[0]) == common(
        svc, c, path="small.bin", direction="read", options_requested={}, options_acknowledged={},
        blksize=512, windowsize=1, tsize=None, bytes_transferred=1024, bytes_sent=1024,
        packets_sent=2, packets_received=2, retransmits=0, duplicates=0,
        outcome="client-error", error_code=0, error_message="changed my mind")
    assert records[0].reason == "client_error"
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_record_of_a_timeout_on_a_fake_clock(service):
    clock = Clock()
    records = []
    svc = service(reactor=HybridReactor(reactor, clock), session_stats_callback=records.append,
                  config=ServerConfig(schedule=Schedule.parse("1,2"), adaptive=False, shutdown_grace=0))
    c = listen()
    c.send(packet.request(packet.RRQ, "small.bin", "octet", {"blksize": "1024"}), addr(svc))
    oack, _ = yield c.recv()
    clock.advance(1)       # an unverified peer gets no timer resend
    clock.advance(2)       # and the watchdog gives up
    assert [d for d, _ in (yield c.quiet(0.1))] == []
    assert check_times(records[0], exact_duration=3.0, first=False) == common(
        svc, c, path="small.bin", direction="read", options_requested={"blksize": "1024"},
        options_acknowledged={"blksize": "1024"}, blksize=1024, windowsize=1, tsize=None,
        bytes_transferred=0, bytes_sent=0, packets_sent=1, packets_received=0, retransmits=0, duplicates=0,
        outcome="timeout", error_code=None, error_message="timed out after 0 retransmissions")
    assert records[0].reason == "timeout"
    yield c.close()
    stopped = svc.stopService()
    clock.advance(0)
    yield stopped


@pytest_twisted.inlineCallbacks
def test_record_of_a_refusal_has_no_transfer(service):
    records = []
    svc = service(session_stats_callback=records.append)
    c = listen()
    c.send(packet.request(packet.RRQ, "missing.cfg", "octet", {"blksize": "1468"}), addr(svc))
    data, _ = yield c.recv()
    assert packet.parse_error(data).code == packet.ERR_NOT_FOUND
    c.send(packet.request(packet.RRQ, "hello.txt", "mail"), addr(svc))
    yield c.recv()
    yield wait_for(records, 2)
    assert check_times(records[0], first=False) == common(
        svc, c, path="missing.cfg", direction="read", options_requested={"blksize": "1468"},
        options_acknowledged={}, blksize=None, windowsize=None, tsize=None,
        bytes_transferred=0, bytes_sent=0, packets_sent=1, packets_received=0, retransmits=0, duplicates=0,
        outcome="server-error", error_code=1, error_message="File not found")
    assert [r.reason for r in records] == ["not_found", "illegal_operation"]
    assert records[1].mode == "mail" and records[1].error_code == packet.ERR_ILLEGAL
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_a_raising_callback_is_contained_and_later_listeners_still_run(service):
    def broken(record):
        raise RuntimeError("callback bug")

    sessions = []
    with Events() as events:
        svc = service(session_stats_callback=broken)
        svc.stats.session_listeners.append(sessions.append)
        c = listen()
        for n in (1, 2):
            yield download(c, addr(svc), "hello.txt")
            yield wait_for(sessions, n)
    assert [r.outcome for r in sessions] == ["ok", "ok"]
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 2 and all("callback bug" in str(e["log_failure"].value) for e in failures)
    assert svc.stats.get_counter("sessions_completed") == 2
    yield c.close()


# -- server counters ----------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_counters_after_a_mixed_workload(service, root):
    port = free_port()
    svc = service(config=ServerConfig(port_range=(port, port), max_queue=0, dally=0.05, shutdown_grace=0))
    stats = svc.stats
    a, b = listen(), listen()
    yield download(a, addr(svc), "small.bin")                       # ok, 5000 bytes
    yield sleep(0.05)
    a.send(packet.request(packet.RRQ, "nope", "octet"), addr(svc))  # not found
    yield a.recv()
    _, _, tid = yield download(a, addr(svc), "small.bin", {"tsize": "0"}, ack_oack=False)
    a.send(packet.error(8, "tsize only"), tid)                      # the UEFI probe
    yield sleep(0.05)
    a.send(packet.request(packet.RRQ, "small.bin", "octet"), addr(svc))
    _, tid = yield a.recv()                                         # holds the only session port...
    b.send(packet.request(packet.RRQ, "hello.txt", "octet"), addr(svc))
    busy, _ = yield b.recv()                                        # ...and no room to wait: b is refused
    assert packet.parse_error(busy).message.startswith("Server busy")
    assert stats.active == 1
    a.send(packet.error(0, "abort"), tid)                           # a client abort after 512 bytes
    yield sleep(0.05)
    a.send(packet.request(packet.WRQ, "up.bin", "octet"), addr(svc))
    _, tid = yield a.recv()
    a.send(packet.data(1, b"x" * 100), tid)                         # ok, 100 bytes up
    yield a.recv()
    a.send(b"\x00\x09junk", addr(svc))                              # two malformed packets
    yield a.recv()
    a.send(packet.ack(3), addr(svc))
    yield a.recv()
    yield sleep(0.15)
    expected = {
        "sessions_started": 5, "sessions_completed": 2, "sessions_failed_not_found": 1, "tsize_probes": 1,
        "sessions_failed_client_error": 1, "requests_refused_busy": 1,
        "malformed_packets": 2, "bytes_downloaded": 5512, "bytes_uploaded": 100, "bytes_sent": 5512,
    }
    assert stats.get_all_counters() == expected
    assert stats.get_gauges() == {"sessions_active": 0}
    assert stats.get_and_reset_counter("malformed_packets") == 2 and stats.get_counter("malformed_packets") == 0
    assert stats.get_and_reset_all_counters() == dict(expected, malformed_packets=0)
    assert stats.get_all_counters() == {}
    assert stats.totals == expected  # exporters keep counting
    stats.set_counter("x", 5)
    stats.increment_counter("x", -2)
    stats.reset_counter("sessions_started")
    assert stats.get_all_counters() == {"x": 3, "sessions_started": 0}
    stats.reset_all_counters()
    assert stats.get_all_counters() == {} and stats.duration() >= 0
    yield a.close()
    yield b.close()


def test_reasons_are_a_bounded_set():
    assert len(set(REASONS)) == len(REASONS) == 12 and "server_shutdown" in REASONS


# -- the periodic report ------------------------------------------------------------------------


def test_report_keeps_to_its_schedule_without_drift():
    clock = Clock()
    stats = ServerStats(interval=10, clock=clock.seconds)
    times = []
    stats.start_reporting(clock, lambda s: times.append(clock.seconds()))
    for _ in range(56):
        clock.advance(0.75)  # the report runs at the first tick after each 10 s mark
    assert times == [10.5, 20.25, 30.0, 40.5]
    stats.stop_reporting()
    clock.advance(100)
    assert len(times) == 4


def test_a_raising_report_is_logged_each_time_and_the_schedule_goes_on():
    clock = Clock()
    stats = ServerStats(interval=5, clock=clock.seconds)
    calls = []

    def report(s):
        calls.append(clock.seconds())
        if len(calls) == 1:
            raise RuntimeError("metrics backend down")
        if len(calls) == 2:
            return fail(RuntimeError("async failure"))

    with Events() as events:
        stats.start_reporting(clock, report)
        clock.advance(5)
        clock.advance(5)
        clock.advance(5)
    assert calls == [5, 10, 15]
    failures = [str(e["log_failure"].value) for e in events if "log_failure" in e]
    assert failures == ["metrics backend down", "async failure"]


@pytest_twisted.inlineCallbacks
def test_service_reports_every_interval(service):
    clock = Clock()
    seen = []
    svc = service(reactor=HybridReactor(reactor, clock), stats_interval=60,
                  server_stats_callback=lambda s: seen.append((clock.seconds(), s.get_and_reset_all_counters())))
    c = listen()
    c.send(b"\x00\x07", addr(svc))
    yield c.recv()
    clock.advance(59)
    assert seen == []
    clock.advance(1)
    clock.advance(60)
    assert seen == [(60, {"malformed_packets": 1}), (120, {})]
    assert svc.stats.interval == 60 and svc.stats.server_addr == "127.0.0.1"
    yield c.close()
    stopped = svc.stopService()
    clock.advance(0)
    yield stopped
    clock.advance(600)
    assert len(seen) == 2  # stopped with the service


def test_log_server_stats_logs_and_resets():
    stats = ServerStats(interval=60)
    stats.session_started()
    stats.increment_counter("sessions_completed")
    stats.increment_counter("sessions_failed_timeout")
    with Events() as events:
        log_server_stats(stats)
    (event,) = [e for e in events if e.get("log_namespace") == "txfbtftp"]
    assert event["counters"] == {"sessions_started": 1, "sessions_completed": 1, "sessions_failed_timeout": 1,
                                 "sessions_active": 1}
    assert event["failed"] == 1 and stats.get_all_counters() == {}
    assert formatEvent(event) == ("stats: 1 sessions started, 1 completed, 1 failed, 1 active; "
                                  "0 bytes sent, 0 retransmissions")


def test_json_lines_survive_an_unformattable_event():
    import io

    from txfbtftp import json_observer

    out = io.StringIO()
    observe = json_observer(out)
    observe({"log_format": "{missing}", "log_namespace": "x", "log_time": 1.0})
    observe({"log_format": "n={n}", "n": 3, "log_namespace": "x", "log_time": 2.0})
    first, second = [json.loads(line) for line in out.getvalue().splitlines()]
    assert first["log_namespace"] == "x" and "Unable to format" in first["text"]
    assert second["n"] == 3 and second["text"] == "n=3" and second["log_format"] == "n={n}"


# -- logs -----------------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_session_log_line_carries_the_record(service):
    with Events() as events:
        svc = service()
        c = listen()
        yield download(c, addr(svc), "small.bin", {"blksize": "1468"})
        yield sleep(0.05)
    (event,) = [e for e in events if "bytes_transferred" in e]
    assert event["log_level"].name == "info"
    assert (event["client"], event["client_port"]) == ("127.0.0.1", c.transport.getHost().port)
    assert (event["path"], event["direction"], event["bytes_transferred"]) == ("small.bin", "read", 5000)
    assert (event["outcome"], event["error_code"], event["blksize"]) == ("ok", None, 1468)
    assert "RRQ 'small.bin' octet: 5000 bytes in" in formatEvent(event)
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_a_request_of_64_kib_makes_a_line_of_a_few(service):
    """The log keeps the start of what an anonymous client chose to send:
    its name, its options and its ERROR text, not all of them."""
    with Events() as events:
        svc = service()
        c = listen()
        options = {"x%d" % i: "v" * 2000 for i in range(25)}
        c.send(packet.request(packet.RRQ, "n" * 12000, "octet", options), addr(svc))
        data, _ = yield c.recv()
        assert packet.opcode_of(data) == packet.ERROR
        c.send(packet.request(packet.RRQ, "small.bin", "octet"), addr(svc))
        data, server = yield c.recv()
        c.send(packet.error(0, "e" * 30000), server)
        yield sleep(0.1)
    lines = [formatEvent(e) for e in events if "bytes_transferred" in e]
    events = [e for e in events if "bytes_transferred" in e]
    assert len(lines) == 2 and all(len(line) < 2000 for line in lines), [len(line) for line in lines]
    assert len(events[0]["path"]) == 515 and len(events[0]["options_requested"]) == 16
    assert len(events[1]["error_message"]) == 515
    assert sum(len(json.dumps(e, default=str)) for e in events) < 10000
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_malformed_traffic_is_rate_limited_per_host_with_the_count_reported(service):
    clock = Clock()
    with Events() as events:
        svc = service(reactor=HybridReactor(reactor, clock))
        c = listen()
        for _ in range(5):
            c.send(b"\x00\x04\x00\x01", addr(svc))
            yield c.recv()
        clock.advance(61)
        c.send(b"\x00\x01x", addr(svc))
        yield c.recv()
    lines = [formatEvent(e) for e in events if e.get("what")]
    assert len(lines) == 2 and "Traceback" not in "".join(lines)
    assert lines[0].endswith("unexpected packet (opcode 4) on the listening port")
    assert "malformed request" in lines[1] and lines[1].endswith("(4 more from this host not logged)")
    assert svc.stats.get_counter("malformed_packets") == 6
    yield c.close()
    stopped = svc.stopService()
    clock.advance(0)
    yield stopped


def test_log_format_json_selects_twistds_logger(tmp_path, capfd):
    from twisted.scripts.twistd import ServerOptions
    from txfbtftp import json_observer

    config = ServerOptions()
    config.parseOptions(["-n", "tftp", "--backend", "fs:%s" % tmp_path, "--log-format", "json"])
    assert config["logger"] is json_observer
    for args in (["tftp"], ["-n", "--logfile", "x.log", "tftp"], ["-n", "--logger", "a.b", "tftp"]):
        with pytest.raises(SystemExit) as stop:  # twistd tftp: one line and EX_USAGE
            ServerOptions().parseOptions(args[:-1] + ["tftp", "--backend", "fs:%s" % tmp_path,
                                                      "--log-format", "json"])
        err = capfd.readouterr().err
        assert stop.value.code == 64 and "log-format json" in err and len(err.splitlines()) == 1


def test_twistd_writes_json_lines(root):
    """``twistd -n tftp --log-format json``: every line is JSON, the session line has the record."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    proc = subprocess.Popen(
        [twistd, "-n", "--pidfile=", "tftp", "--backend", "fs:%s" % root,
         "--port", "0", "--interface", "127.0.0.1", "--log-format", "json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    watchdog = threading.Timer(20, proc.kill)
    watchdog.start()
    try:
        deadline = time.time() + 15
        port = None
        while port is None and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            event = json.loads(line)
            if event.get("log_format", "").startswith("TFTP server listening"):
                port = event["port"]
        assert port, "".join(lines)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(packet.request(packet.RRQ, "hello.txt", "octet"), ("127.0.0.1", port))
        data, tid = s.recvfrom(1024)
        s.sendto(packet.ack(1), tid)
        s.close()
        while time.time() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "bytes_transferred" in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=10)
        watchdog.cancel()
    lines += rest.splitlines(True)
    events = [json.loads(line) for line in lines if line.strip()]
    (session,) = [e for e in events if "bytes_transferred" in e]
    assert data[4:] == (root / "hello.txt").read_bytes()
    assert session["level"] == "info" and session["outcome"] == "ok" and session["bytes_transferred"] == 20
    assert session["path"] == "hello.txt" and "RRQ 'hello.txt' octet: 20 bytes in" in session["text"]


def test_a_backend_counts_in_the_service_statistics_through_wrappers():
    """``ICounting``: the service hands its counter to the backend; chains and
    remapping pass it on; what is counted flows with the server's counters."""
    from zope.interface import implementer

    from txfbtftp import ChainBackend, ICounting, IBackend, MemoryBackend, RemapBackend, TFTPService

    @implementer(IBackend, ICounting)
    class Counting(MemoryBackend):
        def count_with(self, increment):
            self.increment = increment

    inner = Counting({"a": b"x"})
    svc = TFTPService(RemapBackend(ChainBackend([MemoryBackend(), inner]), []), Clock(), 0, ["127.0.0.1"])
    inner.increment("cache_hits", 2)
    assert svc.stats.get_counter("cache_hits") == 2 and svc.stats.totals["cache_hits"] == 2


def test_a_record_as_a_dict_is_every_field_with_its_own_option_dicts():
    import dataclasses

    from txfbtftp import SessionRecord
    values = {f.name: "x%d" % i for i, f in enumerate(dataclasses.fields(SessionRecord))}
    values.update(options_requested={"blksize": "1468"}, options_acknowledged={"tsize": "0"}, bytes_transferred=7)
    record = SessionRecord(**values)
    d = record.as_dict()
    assert d == dataclasses.asdict(record) and list(d) == list(values)
    d["options_requested"]["blksize"] = "512"  # the caller's copy, not the record's
    assert record.options_requested == {"blksize": "1468"}


def test_a_change_listener_that_raises_is_logged_and_the_count_goes_on():
    stats, calls, events = ServerStats(), [], []

    def broken():
        calls.append(1)
        raise RuntimeError("listener bug")
    stats.change_listeners.extend([broken, lambda: calls.append(2)])
    globalLogPublisher.addObserver(events.append)
    try:
        stats.increment_counter("sessions_started")
        stats.set_counter("errors_suppressed", 3)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert calls == [1, 2, 1, 2]
    assert stats.get_all_counters() == {"sessions_started": 1, "errors_suppressed": 3}
    assert len([e for e in events if "change listener" in e.get("log_format", "")]) == 2
