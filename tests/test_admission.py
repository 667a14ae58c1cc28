"""Admission control: the queue's order, deduplication, expiry, and 'server busy'."""
import pytest_twisted

from txfbtftp._protocol import packet
from txfbtftp._server.admission import Admission, Verdict
from txfbtftp._protocol.machine import Outcome

from .rawclient import download, listen


def test_fifo_order_and_release():
    adm = Admission(max_sessions=2, max_queue=10)
    started = []
    for i in range(5):
        adm.offer(("10.0.0.%d" % i, 1000), lambda i=i: started.append(i), 0.0)
    assert started == [0, 1] and adm.queued == 3 and adm.active == 2
    adm.release("10.0.0.0", 1.0)
    assert started == [0, 1, 2]
    adm.release("10.0.0.2", 1.0)
    adm.release("10.0.0.1", 1.0)
    assert started == [0, 1, 2, 3, 4] and adm.queued == 0


def test_repeated_requests_keep_their_place_and_the_latest_wins():
    adm = Admission(max_sessions=1)
    started = []
    assert adm.offer(("a", 1), lambda: started.append("a"), 0) is Verdict.START
    assert adm.offer(("b", 1), lambda: started.append("b1"), 0) is Verdict.QUEUED
    assert adm.offer(("c", 1), lambda: started.append("c"), 0) is Verdict.QUEUED
    assert adm.offer(("b", 1), lambda: started.append("b2"), 1) is Verdict.REPEATED
    assert adm.queued == 2
    adm.release("a", 2)
    assert started == ["a", "b2"]


def test_full_queue_is_busy():
    adm = Admission(max_sessions=1, max_queue=1)
    assert adm.offer(("a", 1), lambda: None, 0) is Verdict.START
    assert adm.offer(("b", 1), lambda: None, 0) is Verdict.QUEUED
    assert adm.offer(("c", 1), lambda: None, 0) is Verdict.BUSY


def test_quiet_queued_clients_lose_their_place():
    adm = Admission(max_sessions=1, max_wait=5)
    started = []
    adm.offer(("a", 1), lambda: started.append("a"), 0)
    adm.offer(("gone", 1), lambda: started.append("gone"), 0)
    adm.offer(("alive", 1), lambda: started.append("alive"), 0)
    adm.offer(("alive", 1), lambda: started.append("alive"), 7)  # repeated at t=7
    adm.release("a", 8)
    assert started == ["a", "alive"] and adm.queued == 0


def test_per_client_limit_skips_without_losing_order():
    adm = Admission(max_sessions=0, per_client=1)
    started = []
    adm.offer(("h1", 1), lambda: started.append("h1:1"), 0)
    adm.offer(("h1", 2), lambda: started.append("h1:2"), 0)
    adm.offer(("h2", 1), lambda: started.append("h2:1"), 0)
    assert started == ["h1:1", "h2:1"] and adm.queued == 1
    adm.release("h1", 1)
    assert started == ["h1:1", "h2:1", "h1:2"]


def _addr(svc):
    return ("127.0.0.1", svc.bound_port)


@pytest_twisted.inlineCallbacks
def test_over_the_limit_requests_wait_then_start(serve, root):
    ended = []
    svc = serve(max_sessions=1, on_record=ended.append)
    first, second, third = listen(), listen(), listen()
    first.send(packet.request(packet.RRQ, "small.bin", "octet", {"blksize": "1468"}), _addr(svc))
    oack, tid = yield first.recv()
    for c in (second, third):
        c.send(packet.request(packet.RRQ, "hello.txt", "octet"), _addr(svc))
    second.send(packet.request(packet.RRQ, "hello.txt", "octet"), _addr(svc))  # repeated while queued
    assert (yield second.quiet(0.2)) == [] and (yield third.quiet(0.05)) == []
    assert svc.admission.queued == 2 and len(svc.sessions) == 1
    first.send(packet.ack(0), tid)
    block = 0
    while True:
        data, _ = yield first.recv()
        block += 1
        first.send(packet.ack(block), tid)
        if len(data) - 4 < 1468:
            break
    data, tid2 = yield second.recv()  # the slot freed: the oldest waiter starts
    assert data == packet.data(1, (root / "hello.txt").read_bytes())
    assert (yield third.quiet(0.1)) == []  # still waiting its turn
    second.send(packet.ack(1), tid2)
    data, tid3 = yield third.recv()
    assert data[:4] == packet.data(1, b"")
    third.send(packet.ack(1), tid3)
    yield second.quiet(0.05)
    assert [r.outcome for r in ended] == [Outcome.OK.value] * 3
    assert svc.stats.totals["requests_queued"] == 2
    for c in (first, second, third):
        yield c.close()


@pytest_twisted.inlineCallbacks
def test_full_queue_answers_server_busy(serve):
    svc = serve(max_sessions=1, max_queue=1)
    a, b, c = listen(), listen(), listen()
    a.send(packet.request(packet.RRQ, "small.bin", "octet"), _addr(svc))
    yield a.recv()
    b.send(packet.request(packet.RRQ, "small.bin", "octet"), _addr(svc))
    c.send(packet.request(packet.RRQ, "small.bin", "octet"), _addr(svc))
    data, src = yield c.recv()
    err = packet.parse_error(data)
    assert (err.code, err.message) == (0, "Server busy, try again later") and src[1] == svc.bound_port
    assert (yield b.quiet(0.1)) == []
    assert svc.stats.totals["requests_refused_busy"] == 1
    for x in (a, b, c):
        yield x.close()


@pytest_twisted.inlineCallbacks
def test_no_limit_by_default(serve, root):
    svc = serve()
    clients = [listen() for _ in range(20)]
    results = []
    for c in clients:
        results.append(download(c, _addr(svc), "small.bin"))
    for d in results:
        data, _, _ = yield d
        assert data == (root / "small.bin").read_bytes()
    for c in clients:
        yield c.close()


def test_sessions_ending_inside_start_do_not_break_the_queue():
    adm = Admission(max_sessions=1)
    started = []

    def fails_at_once(name, host):
        def start():
            started.append(name)
            adm.release(host, 1)
        return start

    adm.offer(("a", 1), lambda: started.append("a"), 0)
    adm.offer(("b", 1), fails_at_once("b", "b"), 0)
    adm.offer(("c", 1), fails_at_once("c", "c"), 0)
    adm.offer(("d", 1), lambda: started.append("d"), 0)
    adm.release("a", 1)
    assert started == ["a", "b", "c", "d"] and adm.active == 1 and adm.queued == 0


def test_expired_waiters_do_not_fill_the_queue():
    adm = Admission(max_sessions=1, max_queue=2, max_wait=5)
    adm.offer(("a", 1), lambda: None, 0)
    adm.offer(("b", 1), lambda: None, 0)
    adm.offer(("c", 1), lambda: None, 0)
    assert adm.offer(("d", 1), lambda: None, 100) is Verdict.QUEUED


def test_a_request_put_back_waits_first_in_line_for_a_release():
    """Admitted but unable to start (no port free): it waits at the head of
    the line, nobody overtakes it, and the next release starts it."""
    adm = Admission(max_sessions=4)
    started = []
    tries = {"b": 0}

    def needs_a_port():
        tries["b"] += 1
        if tries["b"] == 1:
            assert adm.put_back(("b", 1), needs_a_port, 0)
        else:
            started.append("b")

    assert adm.offer(("a", 1), lambda: started.append("a"), 0) is Verdict.START
    assert adm.offer(("b", 1), needs_a_port, 0) is Verdict.QUEUED
    assert adm.offer(("c", 1), lambda: started.append("c"), 0) is Verdict.QUEUED
    assert (started, adm.active, adm.queued) == (["a"], 1, 2)
    adm.release("a", 1)
    assert (started, adm.active, adm.queued) == (["a", "b", "c"], 2, 0)


def test_a_request_put_back_with_nothing_to_wait_for_is_refused():
    adm = Admission(max_sessions=4)
    verdicts = []
    adm.offer(("a", 1), lambda: verdicts.append(adm.put_back(("a", 1), lambda: None, 0)), 0)
    assert (verdicts, adm.active, adm.queued) == ([False], 0, 0)
    assert adm.offer(("b", 1), lambda: None, 1) is Verdict.START
