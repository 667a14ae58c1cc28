"""Copies of a request that waited in the listening socket's queue (a boot
storm) neither kill the session they belong to nor start it again; a client
that really starts over is served."""
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from txfbtftp import MemoryBackend, ServerConfig, TFTPProtocol
from txfbtftp._protocol import packet

from .rawclient import listen

CLIENT = ("192.0.2.10", 4000)
LOCAL = ("192.0.2.1", 0)
DATA = bytes(range(256)) * 40  # 20 blocks of 512


class Wire:
    interface = "192.0.2.1"

    def __init__(self):
        self.sent = []

    def getHost(self):
        return IPv4Address("UDP", "192.0.2.1", 69)

    def write(self, data, addr):
        self.sent.append(data)

    def take(self):
        out, self.sent = self.sent, []
        return out


@pytest.fixture
def server():
    clock = Clock()
    proto = TFTPProtocol(MemoryBackend({"f": DATA}), clock, ServerConfig(single_port=True))
    proto.transport = Wire()
    records = []
    proto.stats.session_listeners.append(records.append)
    return proto, clock, records


def send(proto, data, age=0.0):
    proto.packetReceived(data, CLIENT, LOCAL, age)


def test_a_copy_read_after_the_client_answered_is_ignored(server):
    proto, clock, records = server
    rrq = packet.request(packet.RRQ, "f", "octet", {"blksize": "512"})
    send(proto, rrq)
    assert proto.transport.take() == [packet.oack({"blksize": "512"})]
    clock.advance(0.5)
    send(proto, packet.ack(0))
    send(proto, packet.ack(1))
    assert [p[:4] for p in proto.transport.take()] == [packet.data(1, b""), packet.data(2, b"")]
    clock.advance(0.5)
    proto.transport.take()  # DATA 2 again: the client is slow to ACK
    send(proto, rrq, age=0.8)  # sent before the ACKs: a copy that waited in the queue
    assert proto.transport.take() == [] and records == []
    session = proto.sessions[CLIENT]
    for n in range(2, 22):  # 20 full blocks, then an empty one
        send(proto, packet.ack(n))
    assert proto.sessions == {} and [r.reason for r in records] == ["ok"]
    assert records[0].bytes_transferred == len(DATA) and session.record is records[0]


def test_the_same_request_sent_after_the_clients_last_word_starts_over(server):
    proto, clock, records = server
    rrq = packet.request(packet.RRQ, "f", "octet")
    send(proto, rrq)
    send(proto, packet.ack(1))
    clock.advance(2)
    proto.transport.take()
    send(proto, rrq, age=0.1)  # the client rebooted and asks again from the same port
    assert [r.error_message for r in records] == ["client sent a new request"]
    assert [p[:4] for p in proto.transport.take()] == [packet.data(1, b"")]


def test_a_copy_of_an_ended_sessions_request_does_not_start_it_again(server):
    """The UEFI tsize probe: OACK, ERROR 8, done; the probe's copy read late
    must not send a second OACK to a port the client has closed."""
    proto, clock, records = server
    probe = packet.request(packet.RRQ, "f", "octet", {"tsize": "0"})
    send(proto, probe)
    send(proto, packet.error(packet.ERR_OPTIONS, "tsize only"))
    assert [r.reason for r in records] == ["tsize_probe"]
    proto.transport.take()
    clock.advance(1.0)
    send(proto, probe, age=1.5)  # waited in the queue since before the ERROR 8
    assert proto.transport.take() == [] and proto.sessions == {}
    send(proto, probe, age=0.0)  # asked again: a new transfer
    assert proto.transport.take() == [packet.oack({"tsize": str(len(DATA))})]


@pytest_twisted.inlineCallbacks
def test_the_listening_port_measures_how_long_a_request_waited(serve, root):
    """SO_TIMESTAMPNS: the kernel's arrival time, not the time it was read."""
    svc = serve()
    ages = []
    proto = svc.protocols[0]
    original = proto.packetReceived

    def spy(data, addr, local, age=0.0):
        ages.append(age)
        original(data, addr, local, age)

    proto.packetReceived = spy
    c = listen()

    def send_then_stall():
        c.send(packet.request(packet.RRQ, "hello.txt", "octet"), ("127.0.0.1", svc.bound_port))
        time.sleep(0.3)  # the reactor reads nothing meanwhile

    reactor.callLater(0, send_then_stall)
    yield c.recv()
    yield c.close()
    assert len(ages) == 1 and 0.25 <= ages[0] < 5
