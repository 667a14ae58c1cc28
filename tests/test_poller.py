"""The session sockets' poller: the listening ports come first under load."""
import socket

import pytest

from txfbtftp._net import poller
from txfbtftp._net.poller import SessionSockets


class Reactor:
    def addReader(self, reader):
        pass

    def removeReader(self, reader):
        pass


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
