"""The http: backend against a real origin on loopback."""
import gzip
import hashlib
import random

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher

from txfbtftp import _backends as backends
from txfbtftp._protocol import errors, packet
from txfbtftp import HTTPBackend, HTTPOrigin
from txfbtftp._backends.http.origin import relative
from txfbtftp._protocol.netascii import encode
from txfbtftp._netascii import NetasciiReader

from . import rawclient
from .httporigin import slurp, until

BIG = 50 << 20


@pytest.fixture
def http(origin):
    """``http(**kw)``: an HTTPOrigin on the test origin, closed afterwards."""
    made = []

    def make(base=None, **kw):
        made.append(HTTPOrigin(base or origin.base, reactor, **kw))
        return made[-1]

    yield make
    for h in made:
        pytest_twisted.blockon(h.stop())


@pytest.fixture
def logged():
    """The log lines written during the test."""
    events = []
    globalLogPublisher.addObserver(events.append)
    yield lambda: [formatEvent(e) for e in events]
    globalLogPublisher.removeObserver(events.append)


@pytest.fixture
def client():
    c = rawclient.listen()
    c.transport.maxPacketSize = 65536
    yield c
    c.close()


def _server(serve, http, **kw):
    svc = serve(backend=HTTPBackend(http(**kw)))
    return svc, ("127.0.0.1", svc.bound_port)


@pytest_twisted.inlineCallbacks
def _error_for(client, server, name, op=packet.RRQ):
    client.send(packet.request(op, name, "octet"), server)
    data, _ = yield client.recv(3.0)
    assert packet.opcode_of(data) == packet.ERROR, data[:4]
    return packet.parse_error(data).code


def test_paths_stay_under_the_base(http):
    h = http(base="http://repo.example/boot")
    assert h.url("/pxelinux.0") == "http://repo.example/boot/pxelinux.0"
    assert h.url("a b/c%d?.bin") == "http://repo.example/boot/a%20b/c%25d%3F.bin"
    assert h.url("x;y#z/\u00e9") == "http://repo.example/boot/x%3By%23z/%C3%A9"
    assert h.url("//a/./b//c") == "http://repo.example/boot/a/b/c"
    assert h.url("%2e%2e/x") == "http://repo.example/boot/%252e%252e/x"
    for bad in ("../etc/passwd", "a/../../b", "a\\..\\b", "/.."):
        with pytest.raises(errors.AccessViolation):
            relative(bad)
    for empty in ("", "/", "./", "a\x00b"):
        with pytest.raises(errors.FileNotFound):
            relative(empty)


@pytest.mark.parametrize("base", ["ftp://x/", "/srv/tftp", "http://x/?q=1", "http:///nohost"])
def test_bad_base_urls(base):
    with pytest.raises(ValueError):
        HTTPOrigin(base, reactor)


def test_factory_needs_the_reactor():
    with pytest.raises(ValueError, match="reactor"):
        backends.from_spec("http:http://127.0.0.1/")
    backend = backends.from_spec("http:http://127.0.0.1/boot/", reactor=reactor, http_timeout=1.5)
    assert isinstance(backend, HTTPBackend) and backend.origin.timeout == 1.5


@pytest_twisted.inlineCallbacks
def test_first_data_leaves_before_the_origin_has_sent_the_file(serve, http, origin, client):
    body = random.Random(1).randbytes(BIG)
    gate = Deferred()
    origin.add("big.bin", body, gate=gate, gate_after=1 << 20)
    svc, server = _server(serve, http)
    download = rawclient.download(client, server, "big.bin", {"blksize": "65464", "tsize": "0"})
    yield until(lambda: any(packet.opcode_of(d) == packet.DATA for d, _ in client.received))
    assert origin.sent["/boot/big.bin"] <= 1 << 20 and not gate.called
    gate.callback(None)
    data, oack, _ = yield download
    assert oack["tsize"] == str(BIG)
    assert len(data) == BIG and hashlib.sha256(data).digest() == hashlib.sha256(body).digest()


@pytest_twisted.inlineCallbacks
def test_a_slow_client_pauses_the_origin(serve, http, origin, client):
    origin.add("big.bin", bytes(BIG))
    svc, server = _server(serve, http, high_water=256 * 1024)
    client.send(packet.request(packet.RRQ, "big.bin", "octet", {"blksize": "65464"}), server)
    _, tid = yield client.recv()
    client.send(packet.ack(0), tid)
    data, _ = yield client.recv()
    assert packet.opcode_of(data) == packet.DATA
    (session,) = svc.sessions.values()
    reader = session.reader
    yield until(lambda: reader._paused)
    sent = None
    while sent != origin.sent["/boot/big.bin"]:  # until the socket buffers are full
        sent = origin.sent["/boot/big.bin"]
        yield until(lambda: False, timeout=0.2, fail=False)
    assert sent < BIG // 2
    assert reader.buffered <= 256 * 1024 + 128 * 1024
    client.send(packet.error(0, "enough"), tid)
    yield until(lambda: not svc.sessions)
    assert reader._closed and reader.buffered == 0


@pytest.mark.parametrize("status,code", [(404, 1), (410, 1), (403, 2), (401, 2), (500, 0), (502, 0)])
@pytest_twisted.inlineCallbacks
def test_status_codes_map_to_tftp_errors(serve, http, origin, client, status, code):
    origin.add("f", b"x", status=status)
    svc, server = _server(serve, http)
    assert (yield _error_for(client, server, "f")) == code


@pytest_twisted.inlineCallbacks
def test_missing_file_and_escapes(serve, http, origin, client):
    svc, server = _server(serve, http)
    assert (yield _error_for(client, server, "nope")) == 1
    assert (yield _error_for(client, server, "../secret")) == 2
    assert (yield _error_for(client, server, "f", op=packet.WRQ)) == 2
    assert [s.uri for s in origin.seen] == [b"/boot/nope"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest_twisted.inlineCallbacks
def test_redirects_are_not_followed(serve, http, origin, client, logged, status):
    """A 3xx could send the server anywhere, and a cache would keep what it
    found there under the base's name."""
    origin.add("moved", status=status, location=origin.base + "elsewhere")
    origin.add("elsewhere", b"not under this name")
    svc, server = _server(serve, http)
    assert (yield _error_for(client, server, "moved")) == 0
    assert [s.uri for s in origin.seen] == [b"/boot/moved"]
    assert any("/boot/moved: HTTP %d" % status in line for line in logged())


@pytest_twisted.inlineCallbacks
def test_a_body_stored_gzip_encoded_is_served_as_stored(serve, http, origin, client):
    """An object stored with ``Content-Encoding: gzip`` metadata is a file
    like any other: the client gets its bytes, not their decoding."""
    stored = gzip.compress(b"kernel bytes " * 5000)
    origin.add("initrd.gz", stored, content_encoding="gzip")
    svc, server = _server(serve, http)
    data, oack, _ = yield rawclient.download(client, server, "initrd.gz", {"blksize": "1468", "tsize": "0"})
    assert data == stored and oack["tsize"] == str(len(stored))
    assert origin.seen[0].uri == b"/boot/initrd.gz"


@pytest_twisted.inlineCallbacks
def test_origin_that_never_answers_is_error_0_promptly(serve, http, origin, client, logged):
    origin.add("hang", hang=True)
    svc, server = _server(serve, http, timeout=0.3)
    start = reactor.seconds()
    assert (yield _error_for(client, server, "hang")) == 0
    assert reactor.seconds() - start < 1.5
    assert any(line.endswith("/boot/hang: no answer within 0.3s") for line in logged()), logged()


@pytest_twisted.inlineCallbacks
def test_unreachable_origin_is_error_0(serve, http, client):
    svc, server = _server(serve, http, base="http://127.0.0.1:1/", timeout=1.0)
    assert (yield _error_for(client, server, "x")) == 0


@pytest_twisted.inlineCallbacks
def test_stalled_body_is_error_0(serve, http, origin, client):
    origin.add("stall.bin", bytes(300000), stall_after=100000)
    svc, server = _server(serve, http, timeout=0.3)
    start = reactor.seconds()
    with pytest.raises(RuntimeError, match="ERROR 0"):
        yield rawclient.download(client, server, "stall.bin", {"blksize": "8192"})
    assert reactor.seconds() - start < 2.0


@pytest_twisted.inlineCallbacks
def test_truncated_body_is_error_0_never_a_short_file(serve, http, origin, client):
    origin.add("cut.bin", bytes(300000), truncate_at=150000)
    svc, server = _server(serve, http)
    with pytest.raises(RuntimeError, match="ERROR 0"):
        yield rawclient.download(client, server, "cut.bin", {"blksize": "8192"})


@pytest_twisted.inlineCallbacks
def test_no_length_means_no_tsize(serve, http, origin, client):
    body = random.Random(2).randbytes(100000)
    origin.add("chunked.bin", body, no_length=True, chunk=7000, delay=0.001)
    svc, server = _server(serve, http)
    data, oack, _ = yield rawclient.download(client, server, "chunked.bin", {"blksize": "1468", "tsize": "0"})
    assert data == body and oack == {"blksize": "1468"}


@pytest_twisted.inlineCallbacks
def test_encoded_names_and_a_reused_connection(serve, http, origin, client):
    origin.add("a%20b%25.bin", b"first")
    origin.add("second.bin", b"second")
    svc, server = _server(serve, http)
    assert (yield rawclient.download(client, server, "a b%.bin"))[0] == b"first"
    assert (yield rawclient.download(client, server, "/second.bin"))[0] == b"second"
    assert [s.uri for s in origin.seen] == [b"/boot/a%20b%25.bin", b"/boot/second.bin"]
    assert origin.seen[0].client_port == origin.seen[1].client_port
    assert origin.seen[0].if_none_match is None


@pytest_twisted.inlineCallbacks
def test_a_base_with_characters_outside_ascii_is_requested_percent_encoded(http, origin):
    """A request line is ASCII: the base is sent in its URI form; the key,
    and so the cache's name for the file, stays as configured."""
    origin.add("b%C3%B6ot/x", b"from an IRI base")
    h = http(base=origin.base + "b\u00f6ot/")
    body = yield HTTPBackend(h).get_reader("x", None)
    assert (yield slurp(body)) == b"from an IRI base"
    assert origin.seen[-1].uri == b"/boot/b%C3%B6ot/x" and h.key("x") == origin.base + "b\u00f6ot/x"


@pytest_twisted.inlineCallbacks
def test_netascii_over_a_trickling_body(http, origin):
    text = b"".join(b"line %d\n" % i for i in range(30000)) + b"cr\r"
    origin.add("t.txt", text, chunk=3000, delay=0.0005)
    body = yield HTTPBackend(http()).get_reader("t.txt", None)
    assert body.size == len(text)
    assert (yield slurp(NetasciiReader(body), 65536)) == encode(text)


@pytest.mark.parametrize("ranges", [True, False], ids=["206", "200"])
@pytest_twisted.inlineCallbacks
def test_fetch_range_gives_the_rest_of_the_same_file(http, origin, ranges):
    body = random.Random(9).randbytes(300_000)
    origin.add("k", body, etag='"k1"', ranges=ranges, chunk=7000)
    response = yield http().fetch_range("k", 123_456, len(body), '"k1"', None)
    assert response.status == (206 if ranges else 200) and response.size == len(body) - 123_456
    assert (yield slurp(response.body)) == body[123_456:]
    seen = origin.seen[-1]
    assert seen.range == b"bytes=123456-" and seen.if_range == b'"k1"'


@pytest_twisted.inlineCallbacks
def test_fetch_range_refuses_a_file_that_changed(http, origin):
    origin.add("k", b"new" * 1000, etag='"k2"')
    with pytest.raises(errors.TFTPError):
        yield http().fetch_range("k", 100, 3000, '"k1"', None)  # If-Range fails: the whole new file
    origin.add("m", b"x" * 3000, last_modified="Tue, 02 Jan 2024 00:00:00 GMT")
    with pytest.raises(errors.TFTPError):
        yield http().fetch_range("m", 100, 3000, None, "Mon, 01 Jan 2024 00:00:00 GMT")
    with pytest.raises(errors.TFTPError):
        yield http().fetch_range("m", 100, 2999, None, None)  # another length


@pytest_twisted.inlineCallbacks
def test_fetch_range_at_the_end_of_a_file_of_known_length(http, origin):
    """A fill whose filler wrote every byte and died asks for nothing: 416
    with ``bytes */size`` is the end, not an error."""
    body = random.Random(10).randbytes(5000)
    origin.add("k", body, etag='"k1"')
    response = yield http().fetch_range("k", 5000, 5000, '"k1"', None)
    assert response.status == 416 and response.body is None
    with pytest.raises(errors.TFTPError):
        yield http().fetch_range("k", 6000, 6000, '"k1"', None)  # it has shrunk since


@pytest_twisted.inlineCallbacks
def test_fetch_range_past_the_end_of_a_file_of_unknown_length(http, origin):
    origin.add("c", b"abc" * 100, no_length=True, etag='"c1"')
    response = yield http().fetch_range("c", 300, None, '"c1"')
    assert response.status == 416 and response.body is None
    with pytest.raises(errors.FileNotFound):
        yield http().fetch_range("gone", 10, None, '"g1"')


@pytest_twisted.inlineCallbacks
def test_fetch_range_past_byte_0_without_validators_is_refused_unasked(http, origin):
    origin.add("c", b"abc" * 100)
    with pytest.raises(errors.TFTPError):
        yield http().fetch_range("c", 10, 300)
    assert origin.seen == []
    response = yield http().fetch_range("c", 0, 300)  # from the start: nothing to splice
    assert response.status in (200, 206)
    response.body.close()


@pytest.mark.parametrize("now, recorded", [
    ({}, {"etag": '"old"'}),
    ({"etag": '"new"'}, {"etag": '"old"'}),
    ({"last_modified": "Sun, 06 Dec 2026 10:00:00 GMT"}, {"last_modified": "Sat, 05 Dec 2026 10:00:00 GMT"}),
    ({}, {"last_modified": "Sat, 05 Dec 2026 10:00:00 GMT"}),
], ids=["etag-gone", "etag-changed", "date-changed", "date-gone"])
@pytest_twisted.inlineCallbacks
def test_a_part_without_the_recorded_validators_is_refused(http, origin, now, recorded):
    """An origin that ignores If-Range sends the part of whatever file it has
    now: the part must carry the ETag (or Last-Modified) recorded."""
    origin.add("c", b"abc" * 100, ignores_if_range=True, **now)
    with pytest.raises(errors.TFTPError):
        yield http().fetch_range("c", 10, 300, **recorded)
    assert [s.range for s in origin.seen] == [b"bytes=10-"]
