"""A real HTTP origin on loopback whose every answer the test controls."""
import re
from dataclasses import dataclass

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site


@dataclass
class File:
    body: bytes = b""
    status: int = 200
    etag: str | None = None
    last_modified: str | None = None
    #: Bytes per write, and the pause between writes.
    chunk: int = 256 * 1024
    delay: float = 0.0
    #: Hold the body after ``gate_after`` bytes until ``gate`` fires.
    gate: Deferred | None = None
    gate_after: int = 0
    #: Close the connection after this many bytes (the length still says all).
    truncate_at: int | None = None
    #: Send this many bytes, then nothing more.
    stall_after: int | None = None
    #: Never answer at all.
    hang: bool = False
    #: Leave Content-Length out (chunked encoding).
    no_length: bool = False
    #: Answer ``Range: bytes=N-`` with 206 (when ``If-Range``, if any, matches).
    ranges: bool = True
    #: Answer ``Range`` with 206 whatever ``If-Range`` says (as some servers do).
    ignores_if_range: bool = False
    #: Sent as ``Location`` (with a 3xx ``status``).
    location: str | None = None
    #: Sent as ``Content-Encoding``: the body is sent as it is, already encoded.
    content_encoding: str | None = None


@dataclass
class Seen:
    uri: bytes
    if_none_match: bytes | None
    if_modified_since: bytes | None
    client_port: int
    range: bytes | None = None
    if_range: bytes | None = None


class _Sender:
    """Writes one body as a push producer, honouring the File's quirks."""

    def __init__(self, origin: "Origin", request, spec: File, start: int = 0) -> None:
        self.origin = origin
        self.request = request
        self.spec = spec
        self.body = spec.body  # a response goes on with the body it started with
        self.sent = start
        self.paused = False
        self.stopped = False
        self.timer = None
        self.gated = False

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._soon(0)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._soon(0)

    def stopProducing(self) -> None:
        self.stopped = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()

    def _soon(self, delay: float) -> None:
        if not self.stopped and (self.timer is None or not self.timer.active()):
            self.timer = reactor.callLater(delay, self._send)

    def _send(self) -> None:
        spec, body = self.spec, self.body
        while not self.paused and not self.stopped:
            if spec.gate is not None and self.sent >= spec.gate_after and not spec.gate.called:
                if not self.gated:
                    self.gated = True
                    spec.gate.addCallback(lambda _: self._soon(0))
                return
            if spec.truncate_at is not None and self.sent >= spec.truncate_at:
                self.stopped = True
                self.request.channel.transport.loseConnection()
                return
            if spec.stall_after is not None and self.sent >= spec.stall_after:
                return
            if self.sent >= len(body):
                self.stopped = True
                self.request.unregisterProducer()
                self.request.finish()
                return
            end = min(len(body), self.sent + spec.chunk)
            for limit in (spec.gate_after if spec.gate is not None and not spec.gate.called else None,
                          spec.truncate_at, spec.stall_after):
                if limit is not None and limit > self.sent:
                    end = min(end, limit)
            self.request.write(body[self.sent:end])
            self.sent = end
            self.origin.sent[self.request.path.decode("latin-1")] = end
            if spec.delay:
                self._soon(spec.delay)
                return


class _Root(Resource):
    isLeaf = True

    def __init__(self, origin: "Origin") -> None:
        super().__init__()
        self.origin = origin

    def render_GET(self, request):
        o = self.origin
        o.seen.append(Seen(request.uri, request.getHeader(b"if-none-match"),
                           request.getHeader(b"if-modified-since"), request.getClientAddress().port,
                           request.getHeader(b"range"), request.getHeader(b"if-range")))
        spec = o.files.get(request.path.decode("latin-1"))
        if spec is None:
            request.setResponseCode(404)
            return b"not here"
        if spec.hang:
            o.hanging.append(request)
            return NOT_DONE_YET
        if spec.status != 200:
            request.setResponseCode(spec.status)
            if spec.location is not None:
                request.setHeader(b"location", spec.location.encode())
            return b"no"
        if spec.content_encoding is not None:
            request.setHeader(b"content-encoding", spec.content_encoding.encode())
        if spec.etag is not None:
            request.setHeader(b"etag", spec.etag.encode())
            if request.getHeader(b"if-none-match") == spec.etag.encode():
                request.setResponseCode(304)
                return b""
        if spec.last_modified is not None:
            request.setHeader(b"last-modified", spec.last_modified.encode())
            if spec.etag is None and request.getHeader(b"if-modified-since") == spec.last_modified.encode():
                request.setResponseCode(304)
                return b""
        start = _range_start(request, spec)
        if start is not None and start >= len(spec.body):
            request.setResponseCode(416)
            request.setHeader(b"content-range", b"bytes */%d" % len(spec.body))
            return b""
        if start is not None:
            request.setResponseCode(206)
            request.setHeader(b"content-range", b"bytes %d-%d/%d" % (start, len(spec.body) - 1, len(spec.body)))
        if not spec.no_length:
            request.setHeader(b"content-length", b"%d" % (len(spec.body) - (start or 0)))
        o.senders.append(_Sender(o, request, spec, start or 0))
        o.senders[-1].start()
        return NOT_DONE_YET


def _range_start(request, spec: File):
    """Where a ``Range: bytes=N-`` request starts, if it is to be honoured."""
    wanted = request.getHeader(b"range")
    match = re.match(rb"^bytes=(\d+)-$", wanted or b"")
    if not spec.ranges or match is None:
        return None
    if_range = request.getHeader(b"if-range")
    current = {v.encode() for v in (spec.etag, spec.last_modified) if v is not None}
    if if_range is not None and if_range not in current and not spec.ignores_if_range:
        return None  # changed since: the whole file
    return int(match.group(1))


class Origin:
    """``files`` maps URL paths (``/boot/x``) to :class:`File`; ``seen`` lists
    the requests, ``sent`` the body bytes written per path so far."""

    def __init__(self) -> None:
        self.files = {}
        self.seen: list[Seen] = []
        self.sent = {}
        self.hanging = []
        self.senders: list[_Sender] = []
        self.port = reactor.listenTCP(0, Site(_Root(self)), interface="127.0.0.1")
        self.base = "http://127.0.0.1:%d/boot/" % self.port.getHost().port

    def add(self, name: str, body: bytes = b"", **kw) -> File:
        spec = self.files["/boot/" + name] = File(body, **kw)
        return spec

    def requests_for(self, name: str) -> list[Seen]:
        return [s for s in self.seen if s.uri == ("/boot/" + name).encode()]

    def whole(self, name: str) -> list[Seen]:
        """The requests for ``name`` that asked for all of it (no Range)."""
        return [s for s in self.requests_for(name) if s.range is None]

    def close(self):
        for sender in self.senders:
            sender.stopProducing()
        for request in self.hanging + [s.request for s in self.senders]:
            channel = getattr(request, "channel", None)
            if channel is not None and channel.transport is not None:
                channel.transport.abortConnection()
        return self.port.stopListening()


@inlineCallbacks
def until(condition, timeout=5.0, fail=True):
    """Wait (polling) until ``condition()`` holds; or just ``timeout`` seconds."""
    end = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > end:
            if fail:
                raise AssertionError("condition not met within %ss" % timeout)
            return
        yield deferLater(reactor, 0.005, lambda: None)


@inlineCallbacks
def slurp(reader, n=65536):
    """Everything ``reader`` gives, as the server reads it; closes it."""
    out = []
    try:
        while True:
            data = reader.read(n)
            if isinstance(data, Deferred):
                data = yield data
            out.append(data)
            if len(data) < n:
                return b"".join(out)
    finally:
        reader.close()
