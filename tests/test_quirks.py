"""Real UDP on loopback: the quirks firmware and networks throw at a server."""
import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater

from txfbtftp._protocol import packet
from txfbtftp import Limits, Schedule
from txfbtftp._protocol.machine import Outcome

from .rawclient import download, listen


def addr(svc):
    return ("127.0.0.1", svc.bound_port)


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


@pytest_twisted.inlineCallbacks
def test_download_with_options(serve, root):
    svc = serve()
    c = listen()
    data, oack, tid = yield download(c, addr(svc), "small.bin", {"blksize": "1468", "tsize": "0"})
    assert data == (root / "small.bin").read_bytes()
    assert oack == {"blksize": "1468", "tsize": "5000"}
    assert tid[1] != svc.bound_port  # a new TID
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_tsize_probe_then_new_request_from_the_same_port(serve, root):
    """UEFI: RRQ tsize=0 blksize=1468, ERROR 8, then the real RRQ from the same port."""
    ended = []
    svc = serve(on_record=ended.append)
    c = listen()
    _, oack, tid = yield download(c, addr(svc), "small.bin", {"tsize": "0", "blksize": "1468"}, ack_oack=False)
    assert oack["tsize"] == "5000"
    c.send(packet.error(8, "User aborted the transfer"), tid)
    data, oack, tid2 = yield download(c, addr(svc), "small.bin", {"blksize": "1468"})
    assert data == (root / "small.bin").read_bytes() and tid2 != tid
    yield sleep(0.05)
    assert [r.tsize_probe for r in ended] == [True, False]
    assert [r.outcome for r in ended] == [Outcome.CLIENT_ERROR.value, Outcome.OK.value]
    # The server never answered the ERROR.
    assert not [d for d, a in c.received if a == tid and packet.opcode_of(d) == packet.ERROR]
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_retransmitted_request_does_not_start_a_second_transfer(serve):
    """Each repeat gets the first packet again (the client lost it), from the one session."""
    svc = serve(adaptive=False)
    c = listen()
    rrq = packet.request(packet.RRQ, "small.bin", "octet", {"blksize": "1468"})
    for _ in range(3):
        c.send(rrq, addr(svc))
    got = yield c.quiet(0.3)
    assert [packet.opcode_of(d) for d, _ in got] == [packet.OACK] * 3 and len({tid for _, tid in got}) == 1
    assert len(svc.sessions) == 1
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_duplicate_acks_do_not_trigger_retransmission(serve):
    svc = serve(adaptive=False)
    c = listen()
    c.send(packet.request(packet.RRQ, "small.bin", "octet"), addr(svc))
    data, tid = yield c.recv()
    assert data[:4] == packet.data(1, b"")
    c.send(packet.ack(1), tid)
    data, _ = yield c.recv()
    assert data[:4] == packet.data(2, b"")
    for _ in range(4):
        c.send(packet.ack(1), tid)
    got = yield c.quiet(0.3)
    assert got == []  # no DATA 2 again, no DATA 3
    session = list(svc.sessions.values())[0]
    assert session.machine.duplicates == 4 and session.machine.retransmits == 0
    yield c.close()


@pytest_twisted.inlineCallbacks
def _the_rest(c, tid, data):
    """The file a lock-step download of 512-byte blocks brings, from DATA 1 (``data``) on."""
    out = [data[4:]]
    block = 1
    while len(data) - 4 == 512:
        c.send(packet.ack(block), tid)
        data, _ = yield c.recv()
        block += 1
        out.append(data[4:])
    c.send(packet.ack(block), tid)
    return b"".join(out)


@pytest_twisted.inlineCallbacks
def test_stray_tid_gets_error_5_and_does_not_disturb(serve, root):
    svc = serve()
    c, stranger = listen(), listen()
    c.send(packet.request(packet.RRQ, "small.bin", "octet"), addr(svc))
    data, tid = yield c.recv()
    stranger.send(packet.ack(1), tid)
    err, src = yield stranger.recv()
    assert src == tid and packet.parse_error(err).code == packet.ERR_UNKNOWN_TID
    stranger.send(packet.error(0, "x"), tid)  # an ERROR is never answered
    assert (yield _the_rest(c, tid, data)) == (root / "small.bin").read_bytes()
    assert (yield stranger.quiet(0.2)) == []
    yield c.close()
    yield stranger.close()


@pytest_twisted.inlineCallbacks
def test_a_stranger_flooding_a_session_port_gets_a_few_error_5s_and_the_transfer_goes_on(serve, root):
    """Anyone can send with someone else's address: the ERROR 5s are
    rate-limited per address like the listening port's ERRORs."""
    svc = serve()
    c, stranger = listen(), listen()
    c.send(packet.request(packet.RRQ, "small.bin", "octet"), addr(svc))
    data, tid = yield c.recv()
    for _ in range(50):
        stranger.send(packet.ack(1), tid)
    got = yield stranger.quiet(0.3)
    assert 10 <= len(got) <= 11  # a burst of ten, and two a second
    assert {packet.parse_error(d).code for d, _ in got} == {packet.ERR_UNKNOWN_TID}
    assert svc.stats.get_counter("errors_suppressed") == 50 - len(got)
    assert (yield _the_rest(c, tid, data)) == (root / "small.bin").read_bytes()
    yield c.close()
    yield stranger.close()


@pytest_twisted.inlineCallbacks
def test_client_error_mid_transfer_ends_the_session_quietly(serve):
    ended = []
    svc = serve(on_record=ended.append)
    c = listen()
    c.send(packet.request(packet.RRQ, "small.bin", "octet"), addr(svc))
    data, tid = yield c.recv()
    c.send(packet.ack(1), tid)
    yield c.recv()
    c.send(packet.error(0, "Disk full"), tid)
    yield sleep(0.1)
    assert svc.sessions == {}
    assert ended[0].outcome == Outcome.CLIENT_ERROR.value and ended[0].error_code == 0
    assert not [d for d, _ in (yield c.quiet(0.2)) if packet.opcode_of(d) == packet.ERROR]
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_malformed_burst_then_a_normal_download(serve, root):
    svc = serve()
    c = listen()
    garbage = b"\x00\x00" + os.urandom(600)
    burst = [b"", b"\x00", b"\xff\xff\xff", b"\x00\x01", b"\x00\x01nofinalnul", b"\x00\x01\x00octet\x00",
             b"\x00\x02f\x00", b"\x00\x03\x00\x01data", b"\x00\x04\x00\x01", b"\x00\x06x\x00",
             b"\x00\x09junk", garbage]
    for _ in range(20):
        for pkt in burst:
            c.send(pkt, addr(svc))
        c.send(b"\x00\x05\x00\x00ignored\x00", addr(svc))
    got = yield c.quiet(0.3)
    # The first ERRORs go, the rest of the flood is rate-limited (and the ERROR packets get no answer).
    assert 1 <= len(got) <= 12 and {packet.parse_error(d).code for d, _ in got} == {packet.ERR_ILLEGAL}
    assert svc.stats.get_counter("errors_suppressed") == 20 * len(burst) - len(got)
    c2 = listen()
    data, _, _ = yield download(c2, addr(svc), "hello.txt")
    assert data == (root / "hello.txt").read_bytes()
    yield c.close()
    yield c2.close()


@pytest.mark.parametrize("name,code", [
    ("../etc/passwd", packet.ERR_ACCESS),
    ("/../../../../etc/passwd", packet.ERR_ACCESS),
    ("sub/../../outside.txt", packet.ERR_ACCESS),
    ("escape/passwd", packet.ERR_ACCESS),
    ("sub", packet.ERR_ACCESS),
    ("missing", packet.ERR_NOT_FOUND),
])
@pytest_twisted.inlineCallbacks
def test_path_traversal_and_bad_paths(serve, root, name, code):
    (root / "sub").mkdir()
    (root.parent / "outside.txt").write_text("secret")
    (root / "escape").symlink_to("/etc")
    svc = serve()
    c = listen()
    c.send(packet.request(packet.RRQ, name, "octet"), addr(svc))
    data, _ = yield c.recv()
    err = packet.parse_error(data)
    assert err.code == code
    assert "/" not in err.message and "etc" not in err.message
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_leading_slash_is_relative_to_the_root(serve, root):
    svc = serve()
    c = listen()
    data, _, _ = yield download(c, addr(svc), "/hello.txt")
    assert data == (root / "hello.txt").read_bytes()
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_unsupported_mode(serve):
    svc = serve()
    c = listen()
    c.send(packet.request(packet.RRQ, "hello.txt", "mail"), addr(svc))
    data, _ = yield c.recv()
    assert packet.parse_error(data).code == packet.ERR_ILLEGAL
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_interrupted_upload_leaves_no_file(serve, root):
    ended = []
    svc = serve(writable=True, schedule=Schedule.parse("0.05,0.05"), adaptive=False, on_record=ended.append)
    c = listen()
    c.send(packet.request(packet.WRQ, "upload.bin", "octet"), addr(svc))
    data, tid = yield c.recv()
    assert data == packet.ack(0)
    c.send(packet.data(1, b"x" * 512), tid)
    assert (yield c.recv())[0] == packet.ack(1)
    yield sleep(0.4)  # the client vanished; the watchdog gives up
    assert ended and ended[0].outcome == Outcome.TIMEOUT.value
    assert sorted(p.name for p in root.iterdir()) == ["hello.txt", "small.bin"]
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_upload_commits_atomically_and_is_create_only(serve, root):
    svc = serve(writable=True)
    c = listen()
    payload = os.urandom(1300)
    c.send(packet.request(packet.WRQ, "up.bin", "octet", {"tsize": str(len(payload))}), addr(svc))
    data, tid = yield c.recv()
    assert packet.parse_oack(data) == {"tsize": "1300"}
    for n, off in enumerate(range(0, 1536, 512), 1):
        c.send(packet.data(n, payload[off:off + 512]), tid)
        data, _ = yield c.recv()
        assert data == packet.ack(n)
        if n < 3:
            assert not (root / "up.bin").exists()
    assert (root / "up.bin").read_bytes() == payload
    c.send(packet.request(packet.WRQ, "up.bin", "octet"), addr(svc))
    data, _ = yield c.recv()
    assert packet.parse_error(data).code == packet.ERR_EXISTS
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_uploads_disabled_by_default(serve, root):
    svc = serve()
    c = listen()
    c.send(packet.request(packet.WRQ, "x.bin", "octet"), addr(svc))
    data, _ = yield c.recv()
    assert packet.parse_error(data).code == packet.ERR_ACCESS
    assert not (root / "x.bin").exists()
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_upload_over_the_limit(serve, root):
    svc = serve(writable=True, limits=Limits(max_upload_size=600))
    c = listen()
    c.send(packet.request(packet.WRQ, "big.bin", "octet", {"tsize": "5000"}), addr(svc))
    data, _ = yield c.recv()
    assert packet.parse_error(data).code == packet.ERR_DISK_FULL  # refused before any data
    c.send(packet.request(packet.WRQ, "big2.bin", "octet"), addr(svc))
    data, tid = yield c.recv()
    c.send(packet.data(1, bytes(512)), tid)
    yield c.recv()
    c.send(packet.data(2, bytes(512)), tid)
    data, _ = yield c.recv()
    assert packet.parse_error(data).code == packet.ERR_DISK_FULL
    yield sleep(0.05)
    assert sorted(p.name for p in root.iterdir()) == ["hello.txt", "small.bin"]
    yield c.close()


class HybridReactor:
    """Real sockets, fake time: lets a test wait ten 'seconds' in no time."""

    def __init__(self, real, clock):
        self._real, self._clock = real, clock

    def __getattr__(self, name):
        return getattr(self._real, name)

    def callLater(self, *a, **kw):
        return self._clock.callLater(*a, **kw)

    def seconds(self):
        return self._clock.seconds()


@pytest_twisted.inlineCallbacks
def test_oack_acked_ten_seconds_late(serve, root):
    clock = Clock()
    svc = serve(reactor=HybridReactor(reactor, clock))
    c = listen()
    c.send(packet.request(packet.RRQ, "small.bin", "octet", {"blksize": "1468", "tsize": "0"}), addr(svc))
    oack, tid = yield c.recv()
    assert packet.opcode_of(oack) == packet.OACK
    for _ in range(10):
        clock.advance(1)  # ten seconds of silence from the client
    resent = yield c.quiet(0.2)
    assert resent == []  # not a reflector: only the client's own repeat gets the OACK again
    c.send(packet.ack(0), tid)
    data, _ = yield c.recv()
    assert data[:4] == packet.data(1, b"") and len(data) == 4 + 1468  # still within its patience
    session = list(svc.sessions.values())[0]
    assert session.machine.retransmits == 0
    yield c.close()
    stopped = svc.stopService()
    clock.advance(0)  # ports close on the next (fake) tick
    yield stopped


@pytest_twisted.inlineCallbacks
def test_backend_failure_is_a_generic_error_with_the_traceback_logged(serve):
    from twisted.logger import globalLogPublisher
    from zope.interface import implementer

    from txfbtftp import IBackend

    @implementer(IBackend)
    class Broken:
        def get_reader(self, path, request):
            raise RuntimeError("database at /var/lib/secret is down")

        get_writer = get_reader

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        svc = serve(backend=Broken())
        c = listen()
        c.send(packet.request(packet.RRQ, "x", "octet"), addr(svc))
        data, _ = yield c.recv()
    finally:
        globalLogPublisher.removeObserver(events.append)
    err = packet.parse_error(data)
    assert (err.code, err.message) == (0, "Server error")
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 1 and "secret" in str(failures[0]["log_failure"].value)
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_deferred_backend_and_reader(serve):
    """Backends may answer later, and readers may return Deferreds of bytes."""
    from zope.interface import implementer

    from txfbtftp import IBackend, IReader

    payload = os.urandom(10000)

    @implementer(IReader)
    class SlowReader:
        size = len(payload)

        def __init__(self):
            self.pos, self.closed = 0, False

        def read(self, n):
            chunk = payload[self.pos:self.pos + n]
            self.pos += len(chunk)
            return deferLater(reactor, 0.001, lambda: chunk)

        def close(self):
            self.closed = True

    readers = []

    @implementer(IBackend)
    class Later:
        def get_reader(self, path, request):
            assert request.client[0] == "127.0.0.1" and request.local == ("127.0.0.1", svc.bound_port)
            assert request.options == {"blksize": "1000", "windowsize": "4", "tsize": "0"}
            readers.append(SlowReader())
            return deferLater(reactor, 0.01, lambda: readers[-1])

        def get_writer(self, path, request):
            raise NotImplementedError

    svc = serve(backend=Later())
    c = listen()
    data, oack, _ = yield download(c, addr(svc), "dyn", {"blksize": "1000", "windowsize": "4", "tsize": "0"})
    assert data == payload and oack == {"blksize": "1000", "windowsize": "4", "tsize": "10000"}
    yield sleep(0.05)
    assert readers[0].closed
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_a_backend_that_never_answers_is_given_up_on(serve):
    from twisted.internet.defer import Deferred
    from zope.interface import implementer

    from txfbtftp import IBackend

    @implementer(IBackend)
    class Silent:
        def get_reader(self, path, request):
            return Deferred()

        get_writer = get_reader

    ended = []
    svc = serve(backend=Silent(), schedule=Schedule.parse("0.1,0.1"), on_record=ended.append)
    c = listen()
    c.send(packet.request(packet.RRQ, "x", "octet"), addr(svc))
    data, _ = yield c.recv(2)
    assert packet.parse_error(data) == packet.Error(0, "Timed out fetching the file")
    yield sleep(0.05)
    assert svc.sessions == {} and len(ended) == 1 and svc.stats.active == 0
    yield c.close()


@pytest_twisted.inlineCallbacks
def test_queued_requests_that_fail_at_once_release_their_slots(serve, root):
    """Admission must not trip over sessions that end inside their own start."""
    ended = []
    svc = serve(max_sessions=1, on_record=ended.append)
    a, b, c = listen(), listen(), listen()
    a.send(packet.request(packet.RRQ, "small.bin", "octet"), addr(svc))
    data, tid = yield a.recv()
    for x in (b, c):
        x.send(packet.request(packet.RRQ, "missing-%d" % id(x), "octet"), addr(svc))
    yield sleep(0.05)
    assert svc.admission.queued == 2
    a.send(packet.error(0, "bye"), tid)  # frees the slot: both queued requests fail at once
    for x in (b, c):
        data, _ = yield x.recv()
        assert packet.parse_error(data).code == packet.ERR_NOT_FOUND
    yield sleep(0.05)
    assert len(ended) == 3 and svc.stats.active == 0 and svc.admission.active == 0
    for x in (a, b, c):
        yield x.close()


@pytest_twisted.inlineCallbacks
def test_a_service_starts_again_once_its_stop_has_finished(serve, root):
    """Started while its transfers still drain, it refuses at once (the end
    of the drain would release what the start binds); afterwards it serves."""
    (root / "again.bin").write_bytes(b"a" * 5000)
    svc = serve(shutdown_grace=30)
    c = listen()
    c.send(packet.request(packet.RRQ, "again.bin", "octet"), ("127.0.0.1", svc.bound_port))
    yield c.recv()  # DATA 1, never acknowledged: the transfer drains
    stopped = svc.stopService()
    assert not stopped.called
    with pytest.raises(RuntimeError, match="before its stop finished"):
        svc.startService()
    svc.stop_now()
    yield stopped
    yield c.close()
    svc.startService()
    c = listen()
    data, _, _ = yield download(c, ("127.0.0.1", svc.bound_port), "again.bin")
    assert data == b"a" * 5000 and svc.listening and svc.protocols
    yield c.close()
