"""The network edge, on loopback: reply addresses on wildcard listeners, dual
stack, session port ranges, single-port mode and the blksize cap.

Loopback answers for all of 127.0.0.0/8, so 127.0.0.2 and 127.0.0.3 stand in
for the addresses of a multi-homed host; tests/test_netns.py does the same
across a veth pair, with IPv6.
"""
import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from zope.interface import implementer

from txfbtftp._protocol import packet
from txfbtftp import FilesystemBackend
from txfbtftp import IBackend
from txfbtftp import Limits
from txfbtftp import Schedule
from txfbtftp._daemon.options import Options
from txfbtftp._daemon.tap import makeService

from . import clients
from .processes import free_ports
from .rawclient import download, listen, rest
from .test_quirks import HybridReactor

STRICT = os.environ.get("TXFBTFTP_REQUIRE_CLIENTS") == "1"


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


@implementer(IBackend)
class Recording:
    """A filesystem backend that keeps every TransferRequest it was given."""

    def __init__(self, root, **kw):
        self.inner = FilesystemBackend(str(root), **kw)
        self.requests = []

    def get_reader(self, path, request):
        self.requests.append(request)
        return self.inner.get_reader(path, request)

    def get_writer(self, path, request):
        self.requests.append(request)
        return self.inner.get_writer(path, request)


def require(client, **kw):
    """Skip (or, on CI, fail) when ``client`` cannot do what the test needs."""
    try:
        clients.build_command(client, "download", "127.0.0.1", 69, "x", "/dev/null", **kw)
    except clients.Unsupported as e:
        if STRICT and isinstance(e, clients.ClientUnavailable):
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.fixture
def cli(root, started):
    """``cli(*args)``: a service built by ``twistd tftp`` from these options, started."""

    def start(*args):
        o = Options()
        o.parseOptions(["--backend", "fs:%s" % root, "--port", "0", "--stats-interval", "0", "--shutdown-grace", "0"]
                       + list(args))
        top = makeService(o)
        top.startService()
        started.append(top)
        return next(iter(top))  # the TFTP service

    return start


# -- 1. replies leave from the address the request was sent to ---------------------------

@pytest.mark.parametrize("single_port", [False, True], ids=["session-ports", "single-port"])
@pytest.mark.parametrize("iface", ["::", "0.0.0.0"])
@pytest.mark.parametrize("dest", ["127.0.0.2", "127.0.0.3"])
@pytest_twisted.inlineCallbacks
def test_every_reply_leaves_from_the_address_the_request_was_sent_to(serve, root, iface, dest, single_port):
    """PXE ROMs drop replies from any other address (PXE-E18 / timeouts)."""
    backend = Recording(root)
    ended = []
    svc = serve(backend=backend, interfaces=(iface,), single_port=single_port, on_record=ended.append)
    port = svc.bound_port
    server = (dest, port)
    c, stray = listen(), listen()
    data, oack, tid = yield download(c, server, "small.bin", {"blksize": "1468", "tsize": "0"})
    assert data == (root / "small.bin").read_bytes() and oack == {"blksize": "1468", "tsize": "5000"}
    c.send(packet.request(packet.RRQ, "missing", "octet"), server)
    err, err_src = yield c.recv()
    assert packet.parse_error(err).code == packet.ERR_NOT_FOUND
    stray.send(packet.ack(1), server)  # no session: ERROR 4 from the listening port
    err4, err4_src = yield stray.recv()
    stray.send(b"\x00\x01no-mode\x00", server)  # a malformed request
    err4b, err4b_src = yield stray.recv()
    assert packet.parse_error(err4).code == packet.parse_error(err4b).code == packet.ERR_ILLEGAL
    assert err4_src == err4b_src == server

    sources = {src for _, src in c.received + stray.received}
    assert {host for host, _ in sources} == {dest}
    if single_port:
        assert sources == {server}
    else:
        assert tid[1] != port and err_src[1] != port  # each session its own TID
        assert {src for _, src in c.received} == {tid, err_src}
    me = ("127.0.0.1", c.transport.getHost().port)
    assert [(r.path, r.client, r.local) for r in backend.requests] == [
        ("small.bin", me, (dest, port)), ("missing", me, (dest, port))]
    yield sleep(0.02)
    assert [(r.local, r.local_port, r.client, r.reason) for r in ended] == [
        (dest, port, "127.0.0.1", "ok"), (dest, port, "127.0.0.1", "not_found")]
    yield c.close()
    yield stray.close()


# -- 2. dual stack -----------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_one_dual_stack_listener_shows_addresses_in_natural_form(serve, root):
    backend = Recording(root)
    ended, events = [], []
    globalLogPublisher.addObserver(events.append)
    try:
        svc = serve(backend=backend, interfaces=("::",), on_record=ended.append)
        port = svc.bound_port
        v4, v6 = listen("127.0.0.1"), listen("::1")
        got4, _, tid4 = yield download(v4, ("127.0.0.1", port), "hello.txt")
        got6, _, tid6 = yield download(v6, ("::1", port), "hello.txt")
        yield sleep(0.02)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert got4 == got6 == (root / "hello.txt").read_bytes()
    assert tid4[0] == "127.0.0.1" and tid6[0] == "::1"
    p4, p6 = v4.transport.getHost().port, v6.transport.getHost().port
    assert [(r.client, r.local) for r in backend.requests] == [
        (("127.0.0.1", p4), ("127.0.0.1", port)), (("::1", p6), ("::1", port))]
    assert [(r.client, r.client_port) for r in ended] == [("127.0.0.1", p4), ("::1", p6)]
    assert [(r.client, r.local) for r in ended] == [("127.0.0.1", "127.0.0.1"), ("::1", "::1")]
    lines = [formatEvent(e) for e in events]
    assert any(line.startswith("127.0.0.1:%d RRQ 'hello.txt'" % p4) for line in lines)
    assert any(line.startswith("[::1]:%d RRQ 'hello.txt'" % p6) for line in lines)
    assert not [line for line in lines if "::ffff:" in line]
    yield v4.close()
    yield v6.close()


@pytest.mark.parametrize("client", ["curl", "atftp"])
@pytest_twisted.inlineCallbacks
def test_real_clients_over_both_families_against_one_listener(cli, root, tmp_path, client):
    require(client)
    ended = []
    svc = cli("--interface", "::")
    for proto in svc.protocols:
        proto.stats.session_listeners.append(ended.append)
    for host in ("127.0.0.1", "::1"):
        out = tmp_path / ("out-%s" % host.replace(":", "_"))
        res = yield deferToThread(clients.download, client, host, svc.bound_port, "small.bin", out, timeout=20)
        res.check()
        assert out.read_bytes() == (root / "small.bin").read_bytes()
    yield sleep(0.05)
    assert len(svc.listening) == 1
    assert [(r.client, r.local) for r in ended] == [("127.0.0.1", "127.0.0.1"), ("::1", "::1")]


@pytest_twisted.inlineCallbacks
def test_several_interfaces_on_the_same_port(cli, root):
    port = free_ports(1, ("127.0.0.1", "::1"))
    svc = cli("--interface", "127.0.0.1", "--interface", "[::1]", "--port", str(port))
    assert [lp.getHost().port for lp in svc.listening] == [port, port]
    for host in ("127.0.0.1", "::1"):
        c = listen(host)
        data, _, tid = yield download(c, (host, port), "small.bin", {"blksize": "1024"})
        assert data == (root / "small.bin").read_bytes() and tid[0] == host
        c.send(packet.ack(7), (host, port))
        err, src = yield c.recv()
        assert packet.parse_error(err).code == packet.ERR_ILLEGAL and src[:2] == (host, port)
        yield c.close()


# -- 3. session port range ----------------------------------------------------------------

@pytest.mark.parametrize("iface", ["127.0.0.1", "::"])
@pytest_twisted.inlineCallbacks
def test_port_range_bounds_tids_queues_when_exhausted_and_reuses_freed_ports(cli, root, iface):
    low = free_ports(2)
    svc = cli("--interface", iface, "--port-range", "%d:%d" % (low, low + 1))
    assert svc.config.port_range == (low, low + 1)
    server = ("127.0.0.1", svc.bound_port)
    a, b, c = listen(), listen(), listen()
    a.send(packet.request(packet.RRQ, "hello.txt", "octet"), server)
    last, tid_a = yield a.recv()  # one short block: held until acknowledged
    b.send(packet.request(packet.RRQ, "small.bin", "octet"), server)
    _, tid_b = yield b.recv()
    assert {tid_a[1], tid_b[1]} == {low, low + 1}

    c.send(packet.request(packet.RRQ, "small.bin", "octet"), server)
    assert (yield c.quiet(0.2)) == []  # no port free: c waits in the queue, unanswered
    assert (svc.stats.get_counter("requests_queued"), svc.stats.get_counter("requests_refused_busy")) == (1, 0)

    a.send(packet.ack(1), tid_a)  # a's session ends: its port goes to c at once
    assert last[4:] == (root / "hello.txt").read_bytes()
    first, tid_c = yield c.recv()
    assert tid_c == tid_a
    data = yield rest(c, tid_c, first)
    assert data == (root / "small.bin").read_bytes()
    yield sleep(0.02)
    assert len(svc.sessions) == 1  # b still holds the other port
    for x in (a, b, c):
        yield x.close()


# -- 4. single-port mode ------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_single_port_fifty_concurrent_transfers_over_both_families(serve, root):
    """Demultiplexed by client address and port alone: nothing else tells them apart."""
    svc = serve(interfaces=("::",), single_port=True)
    port = svc.bound_port
    expected = (root / "small.bin").read_bytes()
    peers = []
    for i in range(50):
        host = "127.0.0.1" if i % 2 else "::1"
        options = [None, {"blksize": "1468"}, {"blksize": "1024", "windowsize": "4"}, {"blksize": "8"}][i % 4]
        peers.append((listen(host), (host, port), options))
    results = yield DeferredList([download(c, server, "small.bin", options) for c, server, options in peers],
                                 consumeErrors=True)
    assert [ok for ok, _ in results] == [True] * 50, [r for ok, r in results if not ok][:1]
    for (_ok, (data, _, tid)), (_c, server, _) in zip(results, peers, strict=True):
        assert data == expected and tid[:2] == server
    assert svc.sockets is None  # not one session socket was opened: every packet left from the port
    for c, _, _ in peers:
        yield c.close()


@pytest_twisted.inlineCallbacks
def test_single_port_late_packets_of_an_ended_session_are_ignored(serve, root):
    svc = serve(single_port=True, writable=True, dally=0.05)
    server = ("127.0.0.1", svc.bound_port)
    c = listen()
    data, _, tid = yield download(c, server, "hello.txt")
    assert tid == server
    c.send(packet.ack(1), server)  # the final ACK again
    c.send(packet.request(packet.WRQ, "up.bin", "octet"), server)
    assert (yield c.recv())[0] == packet.ack(0)
    c.send(packet.data(1, b"last"), server)
    assert (yield c.recv())[0] == packet.ack(1)
    yield sleep(0.15)  # past the dally: the session is over
    c.send(packet.data(1, b"last"), server)  # the final DATA again
    c.send(packet.error(0, "bye"), server)
    assert (yield c.quiet(0.2)) == []
    assert (root / "up.bin").read_bytes() == b"last"
    assert svc.stats.get_counter("malformed_packets") == 0
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_session_ports_answer_stray_packets_on_the_listening_port(serve):
    """In normal mode late packets go to the (closed) session port; one that
    reaches the listening port is a client's mistake, and is told so."""
    svc = serve()
    server = ("127.0.0.1", svc.bound_port)
    c = listen()
    yield download(c, server, "hello.txt")
    c.send(packet.ack(1), server)
    err, src = yield c.recv()
    assert packet.parse_error(err).code == packet.ERR_ILLEGAL and src == server
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_single_port_memory_of_ended_sessions_is_bounded_and_expires(serve):
    clock = Clock()
    svc = serve(reactor=HybridReactor(reactor, clock), single_port=True, schedule=Schedule.parse("1,2"))
    svc.protocols[0]._ended.limit = 2
    server = ("127.0.0.1", svc.bound_port)
    peers = [listen() for _ in range(3)]

    def stray(c):
        c.send(packet.ack(1), server)
        return c.quiet(0.1)

    try:
        for c in peers:
            c.send(packet.request(packet.RRQ, "missing", "octet"), server)
            assert packet.parse_error((yield c.recv())[0]).code == packet.ERR_NOT_FOUND
        answered = []
        for c in peers:
            answered.append(len((yield stray(c))))
        assert answered == [1, 0, 0]  # the oldest was forgotten
        clock.advance(3.01)  # the schedule's total: nobody retransmits that late
        answered = []
        for c in peers:
            answered.append(len((yield stray(c))))
        assert answered == [1, 1, 1]
    finally:
        for c in peers:
            yield c.close()
        stopped = svc.stopService()
        clock.advance(0)  # ports close on the next (fake) tick
        yield stopped


@pytest_twisted.inlineCallbacks
def test_single_port_with_real_clients(cli, root, tmp_path):
    for client, kw in (("curl", {}), ("atftp", {"blksize": 1468, "windowsize": 8}), ("tftp-hpa", {})):
        require(client, **kw)
    (root / "big.bin").write_bytes(os.urandom(700_000))
    ended = []
    svc = cli("--interface", "::", "--single-port", "--writable")
    for proto in svc.protocols:
        proto.stats.session_listeners.append(ended.append)
    port = svc.bound_port
    sent = []
    real_send_from = svc.listening[0].send_from

    def spy(data, addr, local):
        sent.append(addr)
        real_send_from(data, addr, local)

    svc.listening[0].send_from = spy
    runs = [("curl", "127.0.0.1", {}), ("curl", "::1", {}), ("atftp", "127.0.0.1", {"blksize": 1468, "windowsize": 8})]
    for client, host, kw in runs:
        out = tmp_path / ("%s-%s" % (client, host.replace(":", "_")))
        res = yield deferToThread(clients.download, client, host, port, "big.bin", out, timeout=20, **kw)
        res.check()
        assert out.read_bytes() == (root / "big.bin").read_bytes()
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_001))
    res = yield deferToThread(clients.upload, "tftp-hpa", "127.0.0.1", port, src, "up.bin", timeout=20)
    res.check()
    assert (root / "up.bin").read_bytes() == src.read_bytes()  # committed before the final ACK
    assert svc.sockets is None and len(sent) > 2000  # every reply went out through the listening port
    assert [r.reason for r in ended][:3] == ["ok"] * 3
    assert ended[2].windowsize == 8


# -- 5. the blksize cap -------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_max_blksize_caps_the_negotiation(cli, root, tmp_path):
    svc = cli("--interface", "127.0.0.1", "--max-blksize", "1468")
    assert svc.config.limits == Limits(max_blksize=1468)
    server = ("127.0.0.1", svc.bound_port)
    c = listen()
    data, oack, _ = yield download(c, server, "small.bin", {"blksize": "65464", "tsize": "0"})
    assert oack == {"blksize": "1468", "tsize": "5000"}
    assert data == (root / "small.bin").read_bytes()
    sizes = [len(d) for d, _ in c.received if packet.opcode_of(d) == packet.DATA]
    assert sizes == [4 + 1468] * 3 + [4 + 5000 - 3 * 1468]
    yield c.close()
    require("curl", blksize=65464)
    out = tmp_path / "curl.bin"
    res = yield deferToThread(clients.download, "curl", "127.0.0.1", svc.bound_port, "small.bin", out,
                              blksize=65464, timeout=20)
    res.check()
    assert out.read_bytes() == (root / "small.bin").read_bytes()
