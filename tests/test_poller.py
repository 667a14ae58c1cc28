"""The session sockets' poller: how long it spins (under a fake clock), and
that the listening ports come first under load."""
import select
import socket

import pytest
from twisted.internet.task import Clock

from txfbtftp._net import poller
from txfbtftp._net.poller import SessionSockets, Spin

CEILING = 0.0002


class Reactor:
    def addReader(self, reader):
        pass

    def removeReader(self, reader):
        pass


def replies(spin, clock, after, times=1):
    """The poller went idle, and the next datagram woke it ``after`` seconds
    after the last; the budgets after each wake-up."""
    seen = []
    for _ in range(times):
        spin.idle(clock.seconds())
        clock.advance(after)
        spin.woke(clock.seconds())
        seen.append(spin.budget)
    return seen


def test_a_spin_starts_at_the_ceiling_and_keeps_it_while_it_would_pay():
    clock = Clock()
    spin = Spin(CEILING)
    assert spin.budget == CEILING
    assert replies(spin, clock, 0.00003, 100) == [CEILING] * 100
    assert replies(spin, clock, CEILING * 0.99) == [CEILING]


def test_slow_clients_back_it_off_exponentially_to_none():
    """A lock-step client 20 ms away: a few empty spins, then none at all."""
    clock = Clock()
    spin = Spin(CEILING)
    assert replies(spin, clock, 0.02, 6) == pytest.approx([CEILING / 2, CEILING / 4, CEILING / 8, 0, 0, 0])


def test_it_comes_back_when_a_spin_would_catch_the_clients_again():
    clock = Clock()
    spin = Spin(CEILING)
    replies(spin, clock, 0.02, 4)
    assert spin.budget == 0
    assert replies(spin, clock, 0.00005, 5) == pytest.approx([CEILING / 8, CEILING / 4, CEILING / 2, CEILING, CEILING])


def test_leaving_to_let_other_events_run_says_nothing():
    clock = Clock()
    spin = Spin(CEILING)
    replies(spin, clock, 0.02)
    clock.advance(1)
    spin.woke(clock.seconds())  # not idle before: the time slice was up
    assert spin.budget == CEILING / 2


def test_no_ceiling_no_spin():
    clock = Clock()
    spin = Spin(0.0)
    assert replies(spin, clock, 0.0, 3) == [0, 0, 0]


@pytest.fixture
def stepping():
    """A Clock that moves 10 µs on at every reading, and the poller on it."""
    clock = Clock()

    def now():
        clock.advance(0.00001)
        return clock.seconds()

    poller = SessionSockets(Reactor(), busy_poll=CEILING, clock=now)
    yield clock, poller
    poller.shutdown()


def session(poller, got):
    server = poller.bind(socket.AF_INET, "127.0.0.1", [0])
    poller.register(server, lambda data, addr: got.append(data))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    return server, client


def test_the_poller_spins_its_budget_after_traffic(stepping):
    clock, poller = stepping
    got = []
    server, client = session(poller, got)
    with client:
        client.sendto(b"ack", server.getsockname())
        start = clock.seconds()
        poller.doRead()
        assert got == [b"ack"]
        assert clock.seconds() - start == pytest.approx(CEILING, abs=0.00003)


def test_the_poller_stops_spinning_for_slow_clients_and_spins_again_for_quick_ones(stepping):
    clock, poller = stepping
    got = []
    server, client = session(poller, got)
    with client:
        for _ in range(6):
            clock.advance(0.02)
            client.sendto(b"ack", server.getsockname())
            poller.doRead()
        assert len(got) == 6 and poller.spin.budget == 0
        start = clock.seconds()
        clock.advance(0.02)
        client.sendto(b"ack", server.getsockname())
        poller.doRead()
        assert clock.seconds() - start < 0.02 + 0.0001  # read, one look for more, back
        for _ in range(4):
            client.sendto(b"ack", server.getsockname())
            poller.doRead()
        assert len(got) == 11 and poller.spin.budget == CEILING


class Listening:
    """A listening port's stand-in: notes each read, and reads its socket dry."""

    def __init__(self, seen):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.seen = seen

    def fileno(self):
        return self.sock.fileno()

    def doRead(self):
        while True:
            try:
                self.sock.recv(100)
            except BlockingIOError:
                break
            self.seen.append("request")


@pytest.fixture
def sockets():
    ss = SessionSockets(Reactor(), busy_poll=0.0, time_slice=60.0)
    yield ss
    ss.shutdown()


def _ready_sessions(ss, n, seen, sender):
    for _ in range(n):
        s = ss.bind(socket.AF_INET, "127.0.0.1", (0,))
        ss.register(s, lambda data, addr: seen.append("block"))
        sender.sendto(b"ack", s.getsockname())


def test_a_request_is_read_after_one_batch_of_ready_sessions(sockets):
    seen = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        _ready_sessions(sockets, 3 * poller.BATCH, seen, sender)
        listening = Listening(seen)
        sockets.watch(listening)  # last in the ready list
        sender.sendto(b"rrq", listening.sock.getsockname())
        sockets.doRead()
    listening.sock.close()
    assert seen.count("block") == 3 * poller.BATCH and seen.count("request") == 1
    assert seen.index("request") == poller.BATCH


def test_a_light_load_reads_the_listening_port_in_its_turn(sockets):
    seen = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        _ready_sessions(sockets, 3, seen, sender)
        listening = Listening(seen)
        sockets.watch(listening)
        sender.sendto(b"rrq", listening.sock.getsockname())
        sockets.doRead()
        sockets.unwatch(listening)
        sender.sendto(b"rrq", listening.sock.getsockname())
        _ready_sessions(sockets, poller.BATCH, seen, sender)
        sockets.doRead()
    listening.sock.close()
    assert seen[:4] == ["block"] * 3 + ["request"] and seen.count("request") == 1


def test_an_error_in_the_poller_is_logged_and_the_sessions_go_on(sockets):
    """Raised to the reactor, an unexpected error would disconnect the
    poller and every session behind it: it is logged, at most once a
    minute, and the next read serves as before."""
    from twisted.logger import globalLogPublisher
    seen, events = [], []
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    real = sockets._ep

    class Failing:
        left = 2

        def poll(self, *args):
            if Failing.left:
                Failing.left -= 1
                raise RuntimeError("a bug in the loop")
            return real.poll(*args)

        def __getattr__(self, name):
            return getattr(real, name)
    sockets._ep = Failing()
    globalLogPublisher.addObserver(events.append)
    try:
        _ready_sessions(sockets, 3, seen, sender)
        select.select([real.fileno()], [], [], 2)
        sockets.doRead()
        sockets.doRead()
        assert seen == []
        sockets.doRead()
        assert seen == ["block"] * 3
        assert len([e for e in events if e.get("log_failure") is not None
                    and "session poller" in e.get("log_format", "")]) == 1
    finally:
        globalLogPublisher.removeObserver(events.append)
        sockets._ep = real
        sender.close()
