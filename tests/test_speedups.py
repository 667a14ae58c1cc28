"""The compiled DATA hot path (txfbtftp._speedups) against the pure-Python one.

Both paths run the same downloads over real loopback sockets, driven step by
step on a fake clock: every datagram the client receives, and every field
of the machine, its timer, its round-trip estimate and its reader after
every step, must be the same.  The scripts mix what the compiled lane serves
(whole-window ACKs) with everything it must hand back (the OACK's ACK,
partial, duplicate and gap ACKs, strangers, timeouts, the last ACK, a
client's ERROR).  The rest of the suite runs on whichever path the build
has; CI runs it again with ``TXFBTFTP_PURE_PYTHON=1``.
"""
import os
import select
import socket
import time

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from txfbtftp import FilesystemBackend, ServerConfig
from txfbtftp._net import lanes, poller
from txfbtftp._net.poller import SessionSockets
from txfbtftp._protocol import packet
from txfbtftp._server.dispatcher import TFTPProtocol

compiled = pytest.mark.skipif(poller.Lane is None, reason="the compiled module is not built, or is turned off")


def test_the_compiled_module_is_built_unless_turned_off():
    if os.environ.get("TXFBTFTP_PURE_PYTHON"):
        assert poller.Lane is None
    else:
        import txfbtftp._speedups  # noqa: F401  (a build without it would test one path twice)
        assert poller.Lane is not None


class _Reactor:
    """Enough of a reactor for a poller driven by hand."""

    def addReader(self, reader):
        pass

    def removeReader(self, reader):
        pass


class Twin:
    """A server (the listening protocol on a Clock, its poller driven by hand) and one
    raw client socket on loopback."""

    def __init__(self, root, config):
        self.clock = Clock()
        self.clock.advance(1000)
        self.sockets = SessionSockets(_Reactor(), busy_poll=0, timers=self.clock)
        self.server = TFTPProtocol(FilesystemBackend(str(root)), self.clock, config, sockets=self.sockets)
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))
        self.stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.stranger.bind(("127.0.0.1", 0))
        self.tid = None
        self.trace = []
        self.got = {self.client: [], self.stranger: []}

    def request(self, name, options):
        self.server.datagramReceived(packet.request(packet.RRQ, name, "octet", options),
                                     self.client.getsockname())
        session, = self.server.sessions.values()
        self.session = session
        self.tid = ("127.0.0.1", session.link.port)
        self.collect()

    def send(self, data, sock=None, read=True):
        if self.session.record is not None:
            return  # the transfer is over: the client has nothing more to say
        (sock or self.client).sendto(data, self.tid)
        select.select([self.sockets.fileno()], [], [], 2)
        if read:
            self.sockets.doRead()
        self.collect()

    def advance(self, seconds):
        self.clock.advance(seconds)
        self.collect()

    def collect(self, wait=0.0):
        self.trace.append(snapshot(self.session))
        for sock, got in self.got.items():  # as it comes: a window must not overflow the buffer
            while select.select([sock], [], [], wait)[0]:
                got.append(sock.recvfrom(70000)[0])

    def received(self):
        """Every datagram the client and the stranger were sent, in order."""
        self.collect(0.2)
        return self.got[self.client], self.got[self.stranger]

    def close(self):
        self.server.stop_sessions()
        self.sockets.shutdown()
        self.client.close()
        self.stranger.close()


def snapshot(session):
    m = session.machine
    if m is None:
        return session.outcome, None
    fields = {k: v for k, v in vars(m).items() if k not in ("watchdog", "oack", "_window", "state")}
    wd, est, r = m.watchdog, m.watchdog.estimator, session.reader
    return session.outcome, (m.state.value, fields, list(m._window), wd.tries, wd.since,
            None if est is None else (est.srtt, est.rttvar, est.rto),
            None if r is None else (r._offset, r._pos, bytes(r._buf)))


def run(root, script, options, config, lanes, monkeypatch):
    """Run ``script`` (a list of actions) on one path; the trace and how
    many steps the lanes served."""
    served = []
    if lanes:
        real = poller._speedups.serve

        def counting(events, table, failed):
            rest, later = real(events, table, failed)
            handed = sum(1 for _, data, _ in later if isinstance(data, bytes))
            served.append(len(events) - len(rest) - handed)
            return rest, later
        monkeypatch.setattr(poller._speedups, "serve", counting)
    else:
        monkeypatch.setattr(poller, "Lane", None)
    twin = Twin(root, config)
    try:
        twin.request("big.bin", options)
        for action in script:
            n = twin.session.machine._sent & 0xFFFF
            if action == "ack":
                twin.send(packet.ack(n))
            elif action == "ack0":
                twin.send(packet.ack(0))
            elif action == "partial":
                twin.send(packet.ack(max(0, n - 2)))
            elif action == "dup":
                twin.send(packet.ack(n))
                twin.send(packet.ack(n))
            elif action == "stranger":
                twin.send(packet.ack(n), twin.stranger)
            elif action == "unread":
                # the ACK waits unread until the deadline: the session drains it
                twin.send(packet.ack(n), read=False)
                twin.advance(1.5)
            elif isinstance(action, str) and "+" in action:
                # two datagrams wait unread when the deadline comes
                first = {"partial": packet.ack(max(0, n - 2)), "error": packet.error(packet.ERR_UNDEFINED, "bye"),
                         "stranger": packet.ack(n)}[action.split("+")[0]]
                twin.send(first, twin.stranger if action.startswith("stranger") else None, read=False)
                twin.send(packet.ack(n), read=False)
                twin.advance(1.5)
            elif action == "late":
                twin.advance(1.5)  # past any deadline: the window is resent
            elif action == "error":
                twin.send(packet.error(packet.ERR_UNDEFINED, "bye"))
            else:
                twin.advance(action)  # time passes between the client's answers
        twin.advance(1)  # past the dally
        received = twin.received()
    finally:
        twin.close()
        monkeypatch.undo()
    return twin.trace, received, sum(served)


SIZE = 40 * 512 + 100
STEADY = [0.004, "ack"] * 6
LOCKSTEP = (["ack"] + STEADY + ["dup", 0.002, "ack", "stranger", 0.003, "ack", "late", "ack", "unread"] + STEADY
            + ["ack"] * 30)
WINDOWED = (["ack0"] + STEADY + ["partial", 0.001, "ack", "dup", "late", "ack", "stranger", "ack", "unread"]
            + STEADY + ["ack"] * 10)


@compiled
@pytest.mark.parametrize("options, script", [
    ({}, LOCKSTEP),
    ({"blksize": "512", "timeout": "1"}, ["ack0"] + LOCKSTEP),
    ({"windowsize": "4"}, WINDOWED),
    ({"windowsize": "4", "blksize": "512"}, WINDOWED[:20] + ["error"]),
    ({"windowsize": "3", "blksize": "1024"}, WINDOWED),
], ids=["lockstep-no-options", "lockstep-fixed-timeout", "window-4", "window-4-client-error", "window-3-1024"])
@pytest.mark.parametrize("adaptive", [True, False], ids=["adaptive", "schedule"])
def test_the_lane_steps_exactly_as_python_does(root, monkeypatch, options, script, adaptive):
    (root / "big.bin").write_bytes(os.urandom(SIZE * int(options.get("blksize", 512)) // 512))
    config = ServerConfig(adaptive=adaptive, dally=0.05, shutdown_grace=0)
    pure, pure_got, _ = run(root, script, options, config, False, monkeypatch)
    fast, fast_got, served = run(root, script, options, config, True, monkeypatch)
    assert served >= 5  # the lane did serve
    assert len(fast) == len(pure)
    for i, (a, b) in enumerate(zip(fast, pure, strict=True)):
        assert a == b, "step %d differs" % i
    assert fast_got == pure_got
    client, stranger = fast_got
    assert stranger == [packet.error(packet.ERR_UNKNOWN_TID, packet.MESSAGES[packet.ERR_UNKNOWN_TID])]
    if script[-1] != "error":
        assert fast[-1][0] == "ok"
        assert unique_payload(client) == (root / "big.bin").read_bytes()


@compiled
def test_a_file_of_whole_blocks_ends_with_an_empty_one_on_both_paths(root, monkeypatch):
    (root / "big.bin").write_bytes(os.urandom(12 * 512))
    config = ServerConfig(dally=0.05, shutdown_grace=0)
    script = ["ack"] * 14
    pure, pure_got, _ = run(root, script, {}, config, False, monkeypatch)
    fast, fast_got, served = run(root, script, {}, config, True, monkeypatch)
    assert served >= 10 and fast == pure and fast_got == pure_got
    assert fast_got[0][-1] == packet.DATA_HEADERS[13]  # block 13, empty
    assert fast[-1][0] == "ok"


@compiled
def test_big_windows_leave_in_segmented_sends_and_arrive_whole(root, monkeypatch):
    (root / "big.bin").write_bytes(os.urandom(5 * 16 * 8192 + 7))
    config = ServerConfig(dally=0.05, shutdown_grace=0)
    script = ["ack0"] + ["ack"] * 6
    fast, fast_got, served = run(root, script, {"blksize": "8192", "windowsize": "16"}, config, True, monkeypatch)
    pure, pure_got, _ = run(root, script, {"blksize": "8192", "windowsize": "16"}, config, False, monkeypatch)
    assert served >= 4 and fast == pure and fast_got == pure_got
    assert fast[-1][0] == "ok"
    assert unique_payload(fast_got[0]) == (root / "big.bin").read_bytes()


def unique_payload(datagrams):
    """The file in the DATA packets, each block once (resent ones too)."""
    blocks = {}
    for d in datagrams:
        if packet.opcode_of(d) == packet.DATA:
            blocks.setdefault((d[2] << 8) | d[3], d[4:])
    return b"".join(blocks[n] for n in sorted(blocks))


_TRANSFER = """
import os, sys
from twisted.internet import reactor
import txfbtftp
from txfbtftp._net import lanes, poller
assert poller.Lane is None, "the compiled module is there"
root = sys.argv[1]
svc = txfbtftp.TFTPService(txfbtftp.FilesystemBackend(root), reactor, 0, ["127.0.0.1"])
svc.startService()
got = []
d = txfbtftp.get(reactor, "127.0.0.1", "small.bin", port=svc.bound_port, blksize=1428)
d.addBoth(got.append).addBoth(lambda _: reactor.stop())
reactor.run()
assert got[0].data == open(os.path.join(root, "small.bin"), "rb").read(), got[0]
print("served in pure Python")
"""


def test_pip_install_without_a_compiler_installs_the_pure_python_server(tmp_path, root):
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    here = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"
    shutil.copytree(here, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".cache", "build", "_build", "*.egg-info", "__pycache__", "*.so", "example-root"))
    site = tmp_path / "site"
    env = dict(os.environ, CC="/bin/false", PIP_DISABLE_PIP_VERSION_CHECK="1")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(src)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    assert not list(site.rglob("*.so"))
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("TXFBTFTP_PURE_PYTHON", None)
    run = subprocess.run([sys.executable, "-c", _TRANSFER, str(root)], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "served in pure Python" in run.stdout, run.stderr[-2000:]


UNREAD = ["ack0", 0.004, "ack", 0.004, "ack"]


@compiled
@pytest.mark.parametrize("waiting", ["partial+full", "error+full", "stranger+full"])
def test_datagrams_waiting_at_the_deadline_are_taken_in_order(root, monkeypatch, waiting):
    """Two datagrams wait unread when the deadline comes: the session's drain
    takes them in order on both paths, a handed-back one before the ACK
    behind it."""
    (root / "big.bin").write_bytes(os.urandom(40 * 512))
    config = ServerConfig(dally=0.05, shutdown_grace=0)
    script = UNREAD + [waiting, "ack", "ack"] + ["ack"] * 8
    pure, pure_got, _ = run(root, script, {"windowsize": "4"}, config, False, monkeypatch)
    fast, fast_got, served = run(root, script, {"windowsize": "4"}, config, True, monkeypatch)
    assert served >= 1 and fast == pure and fast_got == pure_got


@compiled
def test_an_ipv6_client_given_as_host_and_port_is_served_in_its_lane(root, monkeypatch):
    """A plain listenUDP reports an IPv6 client as (host, port)."""
    (root / "big.bin").write_bytes(os.urandom(8 * 512 + 1))
    twin = Twin(root, ServerConfig(dally=0.05, shutdown_grace=0))
    c6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    c6.bind(("::1", 0))
    try:
        twin.server.datagramReceived(packet.request(packet.RRQ, "big.bin", "octet", {}), c6.getsockname()[:2])
        session, = twin.server.sessions.values()
        assert list(twin.sockets.lanes.table) == [session.link._sock.fileno()]
        got = []
        while len(got) < 9:
            select.select([c6], [], [], 2)
            data, tid = c6.recvfrom(70000)
            got.append(data)
            c6.sendto(data[:4].replace(b"\0\3", b"\0\4", 1), tid)
            select.select([twin.sockets.fileno()], [], [], 2)
            twin.sockets.doRead()
        assert unique_payload(got) == (root / "big.bin").read_bytes()
        assert session.record is not None and session.record.outcome == "ok"
    finally:
        twin.close()
        c6.close()


@compiled
def test_a_transfer_the_lane_does_not_take_is_served_by_python(root):
    from txfbtftp._protocol.options import Limits
    (root / "big.bin").write_bytes(os.urandom(300 * 8 * 2))
    config = ServerConfig(dally=0.05, shutdown_grace=0, limits=Limits(max_windowsize=512))
    twin = Twin(root, config)
    try:
        twin.request("big.bin", {"windowsize": "300", "blksize": "8"})
        assert twin.sockets.lanes.table == {}  # a window over 256 blocks: no lane
        twin.send(packet.ack(0))
        twin.send(packet.ack(300))
        assert twin.session.record is None and twin.session.machine._acked == 300
    finally:
        twin.close()


@compiled
def test_a_session_that_ends_before_its_lane_opens_leaves_none(root, monkeypatch):
    import errno

    import txfbtftp._backends.fs as fs

    def broken(*args):
        raise OSError(errno.EIO, "I/O error")
    (root / "big.bin").write_bytes(os.urandom(40 * 512))
    twin = Twin(root, ServerConfig(dally=0.05, shutdown_grace=0))
    monkeypatch.setattr(fs.os, "pread", broken)
    try:
        twin.server.datagramReceived(packet.request(packet.RRQ, "big.bin", "octet", {}), twin.client.getsockname())
        assert twin.server.sessions == {} and twin.sockets.lanes.table == {}
    finally:
        monkeypatch.undo()
        twin.close()


@compiled
def test_a_lane_step_that_fails_is_logged_and_the_poller_goes_on(root, monkeypatch):
    """A step whose window cannot be sent keeps its state (the deadline
    resends the window), is logged, and the lane serves the next ACK."""
    from twisted.logger import globalLogPublisher

    from txfbtftp._net.batch import BatchSender
    data = os.urandom(40 * 512)
    (root / "big.bin").write_bytes(data)
    events = []
    globalLogPublisher.addObserver(events.append)
    twin = Twin(root, ServerConfig(dally=0.05, shutdown_grace=0))
    try:
        twin.request("big.bin", {"windowsize": "2", "blksize": "512"})
        twin.send(packet.ack(0))
        twin.send(packet.ack(2))
        with monkeypatch.context() as m:
            m.setattr(BatchSender, "offload", property(lambda self: 1 / 0))
            twin.send(packet.ack(4))  # blocks 5 and 6 are read, but not sent
        assert [e for e in events if e.get("log_format") == "error in a compiled lane"]
        machine = twin.session.machine
        assert (machine._acked, machine._sent, machine.bytes) == (4, 6, 6 * 512)
        twin.advance(1.5)  # the deadline resends them
        twin.send(packet.ack(6))  # the poller still serves
        assert (machine._acked, machine._sent, machine.retransmits) == (6, 8, 2)
        client, _ = twin.received()
        assert [p[2:4] for p in client[1:]] == [(n).to_bytes(2, "big") for n in (1, 2, 3, 4, 5, 6, 7, 8)]
        assert b"".join(p[4:] for p in client[1:]) == data[:8 * 512]
    finally:
        globalLogPublisher.removeObserver(events.append)
        twin.close()


# -- parking: the idle poller sleeps in the compiled module ------------------------------------------


@pytest.fixture
def parked():
    """A session-like socket in the poller's epoll, which sits in a
    reactor-like epoll beside a pipe (the reactor's other descriptors), and
    a client socket."""
    ep, reactor = select.epoll(), select.epoll()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    ep.register(sock.fileno(), select.EPOLLIN)
    r, w = os.pipe()
    reactor.register(ep.fileno(), select.EPOLLIN)
    reactor.register(r, select.EPOLLIN)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield ep, sock, reactor, w, client
    for closing in (reactor, ep, sock, client):
        closing.close()
    os.close(r)
    os.close(w)


def _park(ep, reactor, timeout):
    from txfbtftp import _speedups
    start = time.monotonic()
    result = _speedups.park(ep.fileno(), reactor.fileno(), {}, lambda exc, _: None, timeout, _speedups.Deadlines(),
                            time.time, 0.0)
    return result, time.monotonic() - start


def _nested_as_before(ep, reactor, sock, client):
    """The poller's epoll is back among the reactor's readers, and the
    reactor's is out of the poller's."""
    client.sendto(b"x", sock.getsockname())
    assert reactor.poll(2) == [(ep.fileno(), select.EPOLLIN)]
    assert ep.poll(0) == [(sock.fileno(), select.EPOLLIN)]
    sock.recv(10)


@compiled
def test_a_park_hands_a_datagram_without_a_lane_back_to_python(parked):
    ep, sock, reactor, _, client = parked
    client.sendto(b"ack", sock.getsockname())
    (rest, later, served), took = _park(ep, reactor, 5.0)
    assert rest == [(sock.fileno(), select.EPOLLIN)] and later == [] and served == 0
    assert took < 2.5
    assert sock.recv(10) == b"ack"  # read by Python, not by the park
    _nested_as_before(ep, reactor, sock, client)


@compiled
def test_a_park_ends_when_its_time_is_up(parked):
    ep, sock, reactor, _, client = parked
    (rest, later, served), took = _park(ep, reactor, 0.05)
    assert (rest, later, served) == ([], [], 0)
    assert 0.05 <= took < 2.5
    _nested_as_before(ep, reactor, sock, client)


@compiled
def test_a_park_ends_as_soon_as_the_reactor_has_work(parked):
    ep, _, reactor, w, _ = parked
    os.write(w, b"x")
    (rest, later, served), took = _park(ep, reactor, 5.0)
    assert (rest, later, served) == ([], [], 0) and took < 2.5


@compiled
def test_a_park_lets_other_threads_run(parked):
    """The reactor's threads (file hashing, syncs) run while the poller
    sleeps: here one of them is what ends the sleep."""
    import threading
    ep, _, reactor, w, _ = parked

    def later():
        time.sleep(0.05)
        os.write(w, b"x")  # needs the GIL
    thread = threading.Thread(target=later)
    thread.start()
    (rest, later_calls, served), took = _park(ep, reactor, 10.0)
    thread.join()
    assert (rest, later_calls, served) == ([], [], 0) and took < 5.0


@compiled
def test_a_signal_ends_a_park_and_its_handler_runs(parked):
    import signal
    import threading
    ep, sock, reactor, _, client = parked
    seen = []
    main = threading.get_ident()
    old = signal.signal(signal.SIGUSR1, lambda *_: seen.append(time.monotonic()))
    timer = threading.Timer(0.05, signal.pthread_kill, (main, signal.SIGUSR1))
    try:
        timer.start()
        (rest, later, served), took = _park(ep, reactor, 10.0)
    finally:
        timer.join()
        signal.signal(signal.SIGUSR1, old)
    assert (rest, later, served) == ([], [], 0) and took < 5.0
    assert len(seen) == 1
    _nested_as_before(ep, reactor, sock, client)


@compiled
def test_a_park_that_cannot_turn_the_reactors_epoll_changes_nothing(parked):
    from txfbtftp import _speedups
    ep, sock, reactor, _, client = parked
    stranger = select.epoll()  # does not hold the poller's epoll
    with pytest.raises(OSError):
        _speedups.park(ep.fileno(), stranger.fileno(), {}, lambda exc, _: None, 1.0, _speedups.Deadlines(), time.time,
                       0.0)
    stranger.close()
    _nested_as_before(ep, reactor, sock, client)


@defer.inlineCallbacks
def _download(svc, tmp_path, data):
    """``big.bin`` from ``svc`` through the client, in a process of its own:
    as quick a client as Python makes."""
    import sys

    from twisted.internet.utils import getProcessOutputAndValue

    out = tmp_path / "got.bin"
    _, err, code = yield getProcessOutputAndValue(
        sys.executable, ["-m", "txfbtftp", "get", "-q", "-b", "512", "-o", str(out),
                         f"tftp://127.0.0.1:{svc.protocols[0].transport.getHost().port}/big.bin"],
        env=dict(os.environ))
    assert code == 0, err
    assert out.read_bytes() == data


@compiled
@pytest_twisted.inlineCallbacks
def test_an_idle_poller_sleeps_in_the_lanes_not_in_the_reactor(root, tmp_path, serve):
    """With no busy polling, each ACK of a lock-step download would be one
    trip through the reactor; parked in the compiled module, the poller
    serves them there, and the reactor sees a few (its timers, the last
    ACK)."""
    blocks = 600
    data = os.urandom(512 * blocks)
    (root / "big.bin").write_bytes(data)
    svc = serve(busy_poll=0)
    sockets = svc.protocols[0].sockets
    assert sockets.lanes._park is not None  # the epoll reactor, and the compiled module
    entered = []
    through_the_reactor = sockets.doRead

    def doRead():
        entered.append(1)
        through_the_reactor()
    sockets.doRead = doRead
    yield _download(svc, tmp_path, data)
    assert len(entered) < blocks / 4


@compiled
@pytest_twisted.inlineCallbacks
def test_a_quick_client_gets_the_pollers_busy_polling_back(root, tmp_path, serve):
    """A park ends once a datagram comes sooner than the busy polling would
    have waited for it: a quick client's ACKs are then caught by polling,
    without a sleep and a wake-up each, rather than served in the park,
    even after a slow client had the polling turned off."""
    blocks = 600
    data = os.urandom(512 * blocks)
    (root / "big.bin").write_bytes(data)
    svc = serve(busy_poll=0.005)  # generous: a Python client under load answers well within it
    sockets = svc.protocols[0].sockets
    lanes = sockets.lanes
    opening = lanes.open

    def open_lane(*args):
        sockets.spin.budget = 0.0  # as a slow client would have left it
        return opening(*args)
    lanes.open = open_lane
    parked = []
    real = lanes._park
    lanes._park = lambda *args: (lambda result: parked.append(result[2]) or result)(real(*args))
    yield _download(svc, tmp_path, data)
    assert sum(parked) < blocks / 4


@compiled
@pytest.mark.parametrize("reactor_busy", [False, True], ids=["reactor-idle", "reactor-busy"])
def test_busy_lanes_let_the_reactor_in_at_once(root, reactor_busy):
    """A parked poller keeps serving lanes that stay busy, but not once the
    reactor has something else ready: that comes in the same wake-up."""
    from txfbtftp import _speedups
    (root / "big.bin").write_bytes(os.urandom(400 * 512))
    twin = Twin(root, ServerConfig(dally=0.05, shutdown_grace=0))
    r, w = os.pipe()
    reactor = select.epoll()  # as the epoll reactor's: the poller's epoll, and another descriptor
    reactor.register(twin.sockets.fileno(), select.EPOLLIN)
    reactor.register(r, select.EPOLLIN)
    try:
        twin.request("big.bin", {})
        twin.send(packet.ack(1))  # Python takes it, and opens the lane
        twin.send(packet.ack(2))  # the lane's first, and the timer it leaves Python to re-arm
        assert list(twin.sockets.lanes.table) == [twin.session.link._sock.fileno()]
        for n in range(3, 203):  # queued at once: each acknowledges the whole window once the one before is served
            twin.client.sendto(packet.ack(n), twin.tid)
        if reactor_busy:
            os.write(w, b"x")
        its = twin.sockets.lanes
        rest, later, served = _speedups.park(twin.sockets.fileno(), reactor.fileno(), its.table,
                                             lambda exc, _: None, 0.5, its.deadlines, twin.clock.seconds, 0.0)
        assert rest == [] and later == []
        assert served <= 1 if reactor_busy else served == 200
        assert twin.session.machine._acked == 2 + served
    finally:
        twin.close()
        reactor.close()
        os.close(r)
        os.close(w)


class _EpollReactor(_Reactor):
    """The parts of Twisted's epoll reactor a parking poller looks at."""

    def __init__(self, next_timer):
        self._poller = select.epoll()
        self._stopped = False
        self.next_timer = next_timer
        self.seconds = time.time

    def addReader(self, reader):
        self._poller.register(reader.fileno(), select.EPOLLIN)

    def timeout(self):
        return self.next_timer


@compiled
@pytest.mark.parametrize("running, stopped, next_timer, parks, least, most", [
    (True, False, None, 1, lanes.PARK, 3.0),                   # nothing due: as long as a park may last
    (False, False, None, 1, lanes.PARK_ITERATE, lanes.PARK),  # the same, under reactor.iterate()
    (True, False, 0.03, 1, 0.03, lanes.PARK_ITERATE),          # until the reactor's next timer
    (True, True, None, 0, 0.0, lanes.PARK_ITERATE),            # reactor.stop() was called: back to it at once
], ids=["idle", "iterated", "timer", "stopping"])
def test_a_parked_poller_sleeps_no_longer_than_the_reactor_may_wait(running, stopped, next_timer, parks, least,
                                                                    most):
    reactor = _EpollReactor(next_timer)
    reactor.running = running
    sockets = SessionSockets(reactor, busy_poll=0)
    sock = sockets.bind(socket.AF_INET, "127.0.0.1", [0])
    sockets.register(sock, lambda data, addr: None)
    sockets.lanes.table[sock.fileno()] = object()  # a download under way: parking is worth it
    calls = []
    real = sockets.lanes._park
    sockets.lanes._park = lambda *args: calls.append(args) or real(*args)
    reactor._stopped = stopped
    try:
        start = time.monotonic()
        sockets.doRead()
        took = time.monotonic() - start
    finally:
        sockets.lanes.table.clear()
        sockets.shutdown()
        reactor._poller.close()
    assert len(calls) == parks and least <= took < most


# -- the poller keeps its lanes' deadlines ---------------------------------------------------------


def _slow_client(port, blocks, rtt, withhold=None):
    """A lock-step client that answers each DATA ``rtt`` seconds late (a WAN)
    and does not answer block ``withhold`` the first time; when each DATA
    came, by block number."""
    came = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(packet.request(packet.RRQ, "big.bin", "octet", {}), ("127.0.0.1", port))
        while True:
            data, tid = sock.recvfrom(1024)
            assert data[:2] == b"\x00\x03", data
            n = int.from_bytes(data[2:4], "big")
            came.setdefault(n, []).append(time.monotonic())
            if n == withhold and len(came[n]) == 1:
                continue
            time.sleep(rtt)
            sock.sendto(packet.ack(n), tid)
            if len(data) < 516:
                return came


@compiled
@pytest.mark.parametrize("ticking", [False, True], ids=["quiet", "reactor-timer"])
@pytest_twisted.inlineCallbacks
def test_a_download_over_a_wan_keeps_the_process_asleep_between_blocks(root, serve, ticking):
    """Each ACK moves the session's deadline later.  A reactor timer set for
    the old deadline woke the process for nothing about once per two
    blocks; the parked poller keeps the deadlines itself and wakes only for
    the ACKs, and for the reactor's own timers (the timer it leaves while
    away does not outlive its next park)."""
    from twisted.internet import reactor, task, threads
    ticks = task.LoopingCall(lambda: None)
    if ticking:
        ticks.clock = reactor
        ticks.start(0.25)
    blocks = 60
    (root / "big.bin").write_bytes(os.urandom(512 * blocks + 100))
    svc = serve(dally=0.05)
    records = []
    svc.stats.session_listeners.append(records.append)
    sockets = svc.protocols[0].sockets
    wheel = svc.protocols[0].wheel
    assert sockets.lanes._park is not None
    entered, fired = [], []
    through_the_reactor, wheel_fire = sockets.doRead, wheel._fire
    sockets.doRead = lambda: entered.append(1) or through_the_reactor()
    wheel._fire = lambda: fired.append(1) or wheel_fire()
    try:
        came = yield threads.deferToThread(_slow_client, svc.protocols[0].transport.getHost().port, blocks, 0.02)
    finally:
        if ticks.running:
            ticks.stop()
    assert sorted(came) == list(range(1, blocks + 2)) and all(len(times) == 1 for times in came.values())
    assert fired == []  # the lane's session is not on the wheel
    assert len(entered) <= (3 + 7 if ticking else 3)  # the ticks: one each
    # The lane served the blocks in its parks, Python saw its state only
    # after each: the counts add up all the same.
    yield _ended(records)
    r, = records
    assert (r.outcome, r.bytes_transferred, r.bytes_sent) == ("ok", 512 * blocks + 100, 512 * blocks + 100)
    assert (r.packets_sent, r.packets_received, r.retransmits, r.duplicates) == (blocks + 1, blocks + 1, 0, 0)


@compiled
@pytest_twisted.inlineCallbacks
def test_a_lanes_lost_ack_is_answered_after_its_round_trip_timeout(root, serve):
    """The deadline of a session served by its lane comes from the poller:
    a lost ACK is answered by a retransmission after the learnt timeout
    (tens of milliseconds here), not after the schedule's first second."""
    from twisted.internet import threads
    blocks = 40
    (root / "big.bin").write_bytes(os.urandom(512 * blocks + 100))
    svc = serve(dally=0.05)
    records = []
    svc.stats.session_listeners.append(records.append)
    came = yield threads.deferToThread(_slow_client, svc.protocols[0].transport.getHost().port, blocks, 0.005,
                                       withhold=30)
    assert sorted(came) == list(range(1, blocks + 2))
    first, again = came[30]
    assert 0.04 <= again - first < 0.6
    assert all(len(came[n]) == 1 for n in came if n != 30)
    yield _ended(records)
    r, = records
    assert (r.outcome, r.bytes_transferred, r.bytes_sent) == ("ok", 512 * blocks + 100, 512 * blocks + 100 + 512)
    assert (r.packets_sent, r.packets_received, r.retransmits) == (blocks + 2, blocks + 1, 1)


def _ended(records):
    """Fires once the session's record is in ``records`` (its last ACK may come after the client's last DATA)."""
    from twisted.internet import reactor, task

    def check(left):
        if records or not left:
            return None
        return task.deferLater(reactor, 0.02, check, left - 1)
    return check(100)


def _lane_under_way(root):
    """A Twin whose download has a lane with its deadline filed, and a
    reactor-like epoll holding the poller's."""
    (root / "big.bin").write_bytes(os.urandom(400 * 512))
    twin = Twin(root, ServerConfig(dally=0.05, shutdown_grace=0))
    reactor_ep = select.epoll()
    reactor_ep.register(twin.sockets.fileno(), select.EPOLLIN)
    twin.request("big.bin", {})
    twin.send(packet.ack(1))
    twin.send(packet.ack(2))
    assert len(twin.sockets.lanes.deadlines) == 1
    return twin, reactor_ep


@compiled
def test_a_deadline_taken_off_when_a_park_fails_is_filed_again(root):
    """The park took a come deadline off the heap, then could not give the
    reactor its epoll back: the report is lost with the failure, so the
    lane is filed again, and the session still retransmits."""
    from txfbtftp import _speedups
    twin, reactor_ep = _lane_under_way(root)
    lanes, m = twin.sockets.lanes, twin.session.machine
    read = []

    def seconds():
        read.append(1)
        if len(read) == 1:
            return m.deadline - 0.01  # the deadline 10 ms away
        if len(read) == 2:  # it has come; the reactor's epoll can no longer take the poller's back
            r, _ = os.pipe()
            os.dup2(r, reactor_ep.fileno())
        return m.deadline + 0.001
    lanes._park, lanes._reactor_ep, lanes._timeout = _speedups.park, reactor_ep, lambda: None
    lanes.timers = type("Timers", (), {"seconds": staticmethod(seconds)})
    try:
        assert lanes.park() == ([], False)
        assert lanes._park is None  # no more parking
        assert len(lanes.deadlines) == 1
        lanes.timers = twin.clock
        before = len(twin.received()[0])
        twin.advance(10)
        lanes.look()
        assert len(twin.received()[0]) > before  # the window was sent again
    finally:
        twin.close()


@compiled
def test_a_park_survives_the_sessions_clock_set_back(root):
    """The park converts the sessions' clock to the monotonic one; set back
    meanwhile, it is measured again rather than polled every millisecond."""
    from txfbtftp import _speedups
    twin, reactor_ep = _lane_under_way(root)
    m = twin.session.machine
    read = []

    def seconds():
        read.append(1)
        return m.deadline - 0.02 if len(read) == 1 else m.deadline - 30.0
    try:
        lanes = twin.sockets.lanes
        assert _speedups.park(twin.sockets.fileno(), reactor_ep.fileno(), lanes.table, lambda e, _: None, 0.3,
                              lanes.deadlines, seconds, 0.0) == ([], [], 0)
        assert len(read) <= 3
    finally:
        twin.close()
        reactor_ep.close()


@compiled
def test_an_alarm_cancelled_to_park_does_not_cut_the_parks_after_it_short():
    """Twisted counts a cancelled call in ``timeout()`` until it is due; a
    park after the first must not end, with nothing to do, at the alarm
    the poller left while it was away."""
    from twisted.internet import reactor
    sockets = SessionSockets(reactor, busy_poll=0)
    sock = sockets.bind(socket.AF_INET, "127.0.0.1", [0])
    sockets.register(sock, lambda data, addr: None)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lanes = sockets.lanes
    lanes.table[sock.fileno()] = object()  # a download under way: parking is worth it
    lanes._alarm = reactor.callLater(0.3, lanes._ring)
    reactor.timeout()  # a reactor turn: the alarm is among its timers
    try:
        client.sendto(b"x", sock.getsockname())  # a datagram Python must serve ends the first park
        rest, woke = lanes.park()
        assert rest == [(sock.fileno(), select.EPOLLIN)] and woke
        sock.recv(10)
        start = time.monotonic()
        assert lanes.park() == ([], False)
        assert time.monotonic() - start >= 0.6  # not the cancelled alarm's 0.3 s
    finally:
        lanes.table.clear()
        sockets.shutdown()
        client.close()


@compiled
def test_a_call_into_the_lanes_from_the_sessions_clock_keeps_the_step(root, monkeypatch):
    """A lane reads the sessions' clock before its step begins, and a call
    writes back only the lanes it made hot: a call into the compiled module
    from inside a Python clock (another poller's, a finalizer's) neither
    loses the step under way nor crashes."""
    from txfbtftp import _speedups
    hooks, real = [], Clock.seconds

    def seconds(clock):
        for hook in hooks:
            hook()
        return real(clock)
    monkeypatch.setattr(Clock, "seconds", seconds)
    twin, reactor_ep = _lane_under_way(root)
    reactor_ep.close()
    m = twin.session.machine
    nested = []
    hooks.append(lambda: nested.append(_speedups.serve([], {}, lambda exc, session: None)))
    try:
        for n in range(3, 9):
            twin.send(packet.ack(n - 1))
            assert (m._acked, m._sent, len(m._window)) == (n - 1, n, 1)
        assert len(nested) >= 6 and twin.sockets.lanes.table
        hooks.clear()
        client, _ = twin.received()
        assert [int.from_bytes(p[2:4], "big") for p in client] == list(range(1, 9))
    finally:
        twin.close()


@compiled
def test_a_step_that_cannot_be_written_back_ends_the_transfer(root, monkeypatch):
    """A lane whose copy of the transfer's state cannot be written back
    whole (out of memory, here a reader that refuses once) leaves a
    transfer Python cannot trust: it ends with an ERROR, never serving a
    block twice under two numbers."""
    from txfbtftp._backends import fs

    class Reader(fs.FileReader):
        __slots__ = ("_kept", "refuse")
        LANE = True

        @property
        def _buf(self):
            return self._kept

        @_buf.setter
        def _buf(self, value):
            if getattr(self, "refuse", False):
                self.refuse = False
                raise MemoryError("no room to write the step back")
            self._kept = value
    monkeypatch.setattr(fs, "FileReader", Reader)
    data = os.urandom(30 * 512 + 100)
    (root / "big.bin").write_bytes(data)
    records = []
    twin = Twin(root, ServerConfig(dally=0.05, shutdown_grace=0))
    twin.server.stats.session_listeners.append(records.append)
    try:
        twin.request("big.bin", {})
        twin.send(packet.ack(1))
        twin.send(packet.ack(2))
        assert twin.sockets.lanes.table
        twin.session.reader.refuse = True
        twin.send(packet.ack(3))
        client, _ = twin.received()
        assert [r.outcome for r in records] == ["server-error"]
        assert client[-1][:2] == b"\x00\x05"  # ERROR
        blocks = [p for p in client if p[:2] == b"\x00\x03"]
        assert [int.from_bytes(p[2:4], "big") for p in blocks] == [1, 2, 3, 4]
        assert b"".join(p[4:] for p in blocks) == data[:4 * 512]
    finally:
        twin.close()


@compiled
def test_no_finalizer_sees_a_lanes_copy(root):
    """A collection set off by an allocation inside a call (here the tuple
    handing back a stale ACK after a served one) would run finalizers
    while the lane is hot, showing them the machine before a step whose
    block the client already has: there is no collection during a call."""
    import gc
    twin, reactor_ep = _lane_under_way(root)
    reactor_ep.close()
    m = twin.session.machine
    (lane,) = twin.sockets.lanes.table.values()
    seen = []

    class Garbage:
        armed = True

        def __init__(self):
            self.me = self  # a cycle: only the collector frees it

        def __del__(self):
            if Garbage.armed:
                seen.append((bool(select.select([twin.client], [], [], 0)[0]), m._sent))
                Garbage()

    thresholds = gc.get_threshold()
    try:
        twin.collect()
        n = m._sent
        for ack in (n, n - 1):  # served, then handed back
            twin.client.sendto(packet.ack(ack), twin.tid)
        select.select([twin.sockets.fileno()], [], [], 2)  # loopback: both are queued once sent
        Garbage()
        hold = [(i, -i) for i in range(5000)]  # no tuples left on the free lists
        gc.set_threshold(1, 1000, 1000)
        later, read, _ = lane.drain(10, lanes._lane_failed)
        gc.set_threshold(*thresholds)
        Garbage.armed = False
        assert read == 2 and len(later) == 1 and hold
        assert seen and not [s for s in seen if s[0] and s[1] == n]
    finally:
        gc.set_threshold(*thresholds)
        Garbage.armed = False
        twin.close()
