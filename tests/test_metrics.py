"""Prometheus: path classes, the metrics from records, and a real scrape of /metrics."""
import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.python import usage
from twisted.web.client import Agent, readBody

from txfbtftp._protocol import packet
from txfbtftp._observe.metrics import Metrics, MetricsService, PathClasses, as_metrics
from txfbtftp import TFTPService
from txfbtftp import ServerStats, SessionRecord
from txfbtftp._daemon.options import Options
from txfbtftp._daemon.tap import makeService

from .rawclient import download, listen
from .stathelp import sleep


def record(**kw):
    base = dict(client="192.0.2.7", client_port=2000, local="192.0.2.1", local_port=69, path="pxelinux.0",
                mode="octet", direction="read", options_requested={}, options_acknowledged={}, blksize=512,
                windowsize=1, tsize=None, started_at=0.0, ended_at=1.0, duration=1.0, time_to_first_packet=0.01,
                bytes_transferred=1000, bytes_sent=1512, packets_sent=3, packets_received=2, retransmits=1,
                duplicates=0, outcome="ok", error_code=None, error_message="", tsize_probe=False)
    base.update(kw)
    return SessionRecord(**base)


def test_path_classes():
    assert PathClasses()("anything/at/all") == "all"
    classes = PathClasses([r"(^|/)(vmlinuz|linux)[^/]*$=kernel", r"initrd[^/]*$=initrd",
                           r"^pxelinux\.cfg/=config", ("x=y", "odd")])
    assert [classes(p) for p in ("boot/vmlinuz-6.1", "linux", "ubuntu/initrd.img", "pxelinux.cfg/01-aa",
                                 "a/x=y", "grubx64.efi")] == ["kernel", "kernel", "initrd", "config", "odd", "other"]
    assert classes.names == ("kernel", "initrd", "config", "odd", "other")
    assert PathClasses([r"a=b=c"])("a=b") == "c"  # split at the last '='
    for bad in ("noequals", "=name", "(=x", "x=bad name"):
        with pytest.raises(ValueError):
            PathClasses([bad])


def test_metrics_from_records_have_bounded_labels():
    m = Metrics(path_classes=[r"\.cfg$=config"])
    m.observe(record())
    m.observe(record(bytes_transferred=500, retransmits=0, duration=3.0))
    m.observe(record(path="a.cfg", mode="MAIL-weird", outcome="server-error", error_code=4, bytes_transferred=0,
                     retransmits=0, time_to_first_packet=None, blksize=None))
    m.observe(record(outcome="client-error", error_code=8, tsize_probe=True, bytes_transferred=0, direction="write"))
    get = m.registry.get_sample_value
    ok = dict(direction="read", outcome="ok", mode="octet", path_class="other")
    assert get("tftp_sessions_total", ok) == 2
    assert get("tftp_transfer_bytes_total", ok) == 1500
    assert get("tftp_retransmits_total", ok) == 1
    assert get("tftp_transfer_duration_seconds_count", ok) == 2
    assert get("tftp_transfer_duration_seconds_sum", ok) == 4.0
    assert get("tftp_transfer_duration_seconds_bucket", dict(ok, le="1.0")) == 1
    assert get("tftp_first_packet_latency_seconds_count", ok) == 2
    bad = dict(direction="read", outcome="illegal_operation", mode="other", path_class="config")
    assert get("tftp_sessions_total", bad) == 1
    assert get("tftp_first_packet_latency_seconds_count", bad) is None
    probe = dict(direction="write", outcome="tsize_probe", mode="octet", path_class="other")
    assert get("tftp_sessions_total", probe) == 1
    assert get("tftp_sessions_active") == 0


def test_separate_registries_coexist_and_an_application_registry_is_used():
    Metrics(), Metrics()  # no "duplicated timeseries": each has its own registry
    app = CollectorRegistry()
    svc = TFTPService(object(), reactor, metrics=app)
    assert svc.metrics.registry is app and as_metrics(svc.metrics) is svc.metrics
    stats = ServerStats()
    svc.metrics.attach(stats)
    svc.metrics.attach(stats)
    stats.session_started()
    stats.increment_counter("malformed_packets", 3)
    stats.get_and_reset_all_counters()  # exported totals are not reset
    assert app.get_sample_value("tftp_sessions_active") == 1
    assert app.get_sample_value("tftp_sessions_started_total") == 1
    assert app.get_sample_value("tftp_malformed_packets_total") == 3


def test_options(tmp_path):
    def parse(*args):
        o = Options()
        o.parseOptions(["--backend", "fs:%s" % tmp_path] + list(args))
        return o

    o = parse()
    assert o["metrics"] is None and o["stats-interval"] == 60 and o["log-format"] == "text"
    assert [type(s).__name__ for s in makeService(o)] == ["TFTPService", "Signals"]
    o = parse("--metrics", "9469", "--metrics-path-class", r"\.efi$=efi", "--stats-interval", "0")
    assert o["metrics"] == "tcp:9469" and o["path_classes"]("grubx64.efi") == "efi"
    top = makeService(o)
    tftp, web, _ = list(top)
    assert isinstance(tftp, TFTPService) and isinstance(web, MetricsService)
    assert tftp.server_stats_callback is None and web.registry is tftp.metrics.registry
    for args, words in [(("--metrics", "nope:1"), "--metrics"), (("--metrics", "tcp:x"), "--metrics"),
                        (("--metrics-path-class", "a("), "--metrics-path-class"),
                        (("--stats-interval", "-1"), "--stats-interval"), (("--log-format", "xml"), "--log-format")]:
        with pytest.raises(usage.UsageError, match=words):
            parse(*args)


@pytest.mark.filterwarnings("ignore:Using readBody:DeprecationWarning")
@pytest_twisted.inlineCallbacks
def test_scrape_after_real_transfers(root):
    """``twistd tftp --metrics``'s services, started for real; figures checked over HTTP."""
    o = Options()
    o.parseOptions(["--backend", "fs:%s" % root, "--port", "0", "--interface", "127.0.0.1",
                    "--metrics", "tcp:0:interface=127.0.0.1", "--metrics-path-class", r"\.bin$=binary"])
    top = makeService(o)
    top.startService()
    tftp, web, _ = list(top)
    try:
        server = ("127.0.0.1", tftp.bound_port)
        c = listen()
        for _ in range(2):
            yield download(c, server, "small.bin", {"blksize": "1024"})
            yield sleep(0.02)
        yield download(c, server, "hello.txt")
        c.send(packet.request(packet.RRQ, "missing.bin", "octet"), server)
        yield c.recv()
        c.send(b"\x00\x04\x00\x01", server)
        yield c.recv()
        yield sleep(0.05)
        url = b"http://127.0.0.1:%d/metrics" % web.port.getHost().port
        response = yield Agent(reactor).request(b"GET", url)
        body = (yield readBody(response)).decode()
        yield c.close()
    finally:
        yield top.stopService()
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version=")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body) for s in family.samples}

    def value(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))))

    binary = dict(direction="read", mode="octet", outcome="ok", path_class="binary")
    other = dict(binary, path_class="other")
    assert value("tftp_sessions_total", **binary) == 2
    assert value("tftp_transfer_bytes_total", **binary) == 10000
    assert value("tftp_transfer_duration_seconds_count", **binary) == 2
    assert value("tftp_transfer_duration_seconds_bucket", le="+Inf", **binary) == 2
    assert value("tftp_first_packet_latency_seconds_count", **binary) == 2
    assert value("tftp_sessions_total", **other) == 1
    assert value("tftp_transfer_bytes_total", **other) == 20
    missing = dict(binary, outcome="not_found")
    assert value("tftp_sessions_total", **missing) == 1
    assert value("tftp_transfer_duration_seconds_count", **missing) == 1
    assert value("tftp_first_packet_latency_seconds_count", **missing) is None
    assert value("tftp_sessions_started_total") == 4
    assert value("tftp_malformed_packets_total") == 1
    assert value("tftp_requests_refused_busy_total") == 0
    assert value("tftp_sessions_active") == 0
    assert not [k for k in samples if any(name in ("client", "path", "file") for name, _ in k[1])]
