"""The client's Twisted driver on a fake clock and a fake UDP port: the
transfer ID, the watchdog, cancellation, local failures and back pressure."""
import errno
import socket
import struct

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from zope.interface import implementer

from txfbtftp import IReader, IWriter, Schedule, TFTPTimeout
from txfbtftp._protocol import errors, packet
from txfbtftp.client import get, put

SERVER = ("127.0.0.1", 69)
TID = ("127.0.0.1", 5555)


class FakeSocket:
    family = socket.AF_INET

    def __init__(self):
        self.sent = []

    def sendto(self, data, addr):
        self.sent.append((data, addr))

    def sendmsg(self, buffers, ancillary, flags, addr):
        data = b"".join(buffers)
        size = struct.unpack("=H", ancillary[0][2])[0]
        for i in range(0, len(data), size):
            self.sent.append((data[i:i + size], addr))

    def setsockopt(self, *args):
        pass


class FakePort:
    def __init__(self, protocol):
        self.protocol, self.socket = protocol, FakeSocket()
        self.reading, self.stopped = True, False

    def getHost(self):
        return IPv4Address("UDP", "127.0.0.1", 40000)

    def stopListening(self):
        self.stopped = True

    def stopReading(self):
        self.reading = False

    def startReading(self):
        self.reading = True

    def take(self):
        """What was sent since the last look."""
        sent, self.socket.sent = self.socket.sent, []
        return sent


class FakeReactor(Clock):
    def __init__(self):
        super().__init__()
        self.ports = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        p = FakePort(protocol)
        self.ports.append(p)
        protocol.makeConnection(p)
        return p


@pytest.fixture
def reactor():
    return FakeReactor()


def outcome(d):
    """What ``d`` fired with, or None; ``d`` keeps its result."""
    box = []

    def peek(result):
        box.append(result)
        return result

    d.addBoth(peek)
    if box and not isinstance(box[0], Exception) and hasattr(box[0], "check"):
        d.addErrback(lambda _: None)  # looked at: not an unhandled error
    return box[0] if box else None


def test_the_transfer_id_is_locked_on_the_first_answer(reactor):
    d = get(reactor, "127.0.0.1", "f", blksize=512, tsize=False)
    port = reactor.ports[0]
    assert port.take() == [(packet.request(packet.RRQ, "f"), SERVER)]
    port.protocol.datagramReceived(packet.data(1, b"a" * 512), TID)
    assert port.take() == [(packet.ack(1), TID)]
    port.protocol.datagramReceived(packet.data(2, b"evil"), ("127.0.0.1", 6666))
    port.protocol.datagramReceived(packet.data(2, b"evil"), ("127.0.0.2", 5555))
    port.protocol.datagramReceived(packet.error(0, "stranger"), ("127.0.0.1", 7777))  # never answered
    unknown = packet.error(5, "Unknown transfer ID")
    assert port.take() == [(unknown, ("127.0.0.1", 6666)), (unknown, ("127.0.0.2", 5555))]
    assert outcome(d) is None
    port.protocol.datagramReceived(packet.data(2, b"end"), TID)
    assert port.take() == [(packet.ack(2), TID)]
    result = outcome(d)
    assert result.data == b"a" * 512 + b"end" and result.peer == TID
    r = result.record
    assert (r.client, r.client_port, r.local, r.local_port) == ("127.0.0.1", 40000, "127.0.0.1", 69)
    assert (r.packets_sent, r.packets_received, r.options_acknowledged) == (3, 2, {})
    assert not port.stopped  # dallying: a repeated last block gets the final ACK again
    port.protocol.datagramReceived(packet.data(2, b"end"), TID)
    assert port.take() == [(packet.ack(2), TID)]
    reactor.advance(1.0)
    assert port.stopped and not reactor.getDelayedCalls()


def test_a_stranger_before_the_first_answer_is_refused(reactor):
    d = get(reactor, "127.0.0.1", "f", blksize=512, tsize=False)
    port = reactor.ports[0]
    port.take()
    port.protocol.datagramReceived(packet.data(1, b"x"), ("127.0.0.9", 5555))
    assert port.take() == [(packet.error(5, "Unknown transfer ID"), ("127.0.0.9", 5555))] and outcome(d) is None
    port.protocol.datagramReceived(packet.data(1, b"x"), TID)
    assert outcome(d).data == b"x"


def test_silence_times_out_on_the_schedule(reactor):
    d = get(reactor, "127.0.0.1", "f", schedule=Schedule.parse("1,2"))
    port = reactor.ports[0]
    reactor.advance(1)
    assert len(port.take()) == 2 and outcome(d) is None
    reactor.advance(1.9)
    assert outcome(d) is None
    reactor.advance(0.1)
    failure = outcome(d)
    assert failure.check(TFTPTimeout) and port.stopped and port.take() == []
    assert not reactor.getDelayedCalls()


def test_a_lost_ack_is_repeated_on_the_schedule(reactor):
    d = get(reactor, "127.0.0.1", "f", blksize=1468, tsize=False, schedule=Schedule.parse("0.5,1"))
    port = reactor.ports[0]
    port.take()
    port.protocol.datagramReceived(packet.oack({"blksize": "1468"}), TID)
    assert port.take() == [(packet.ack(0), TID)]
    reactor.advance(0.5)
    assert port.take() == [(packet.ack(0), TID)]  # the watchdog repeats our last word
    port.protocol.datagramReceived(packet.data(1, b"done"), TID)
    result = outcome(d)
    assert result.data == b"done" and result.record.retransmits == 1
    assert result.record.time_to_first_packet == 0


def test_cancelling_tells_the_server(reactor):
    d = get(reactor, "127.0.0.1", "f", blksize=512, tsize=False)
    port = reactor.ports[0]
    port.protocol.datagramReceived(packet.data(1, b"a" * 512), TID)
    port.take()
    d.cancel()
    assert outcome(d).check(CancelledError)
    assert port.take() == [(packet.error(0, "Transfer cancelled"), TID)] and port.stopped
    assert not reactor.getDelayedCalls()


@implementer(IWriter)
class FullDisk:
    aborted = False

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def commit(self):
        pass

    def abort(self):
        self.aborted = True


def test_a_failing_writer_ends_the_transfer_with_its_error(reactor):
    writer = FullDisk()
    d = get(reactor, "127.0.0.1", "f", blksize=512, tsize=False, to=writer)
    port = reactor.ports[0]
    port.take()
    port.protocol.datagramReceived(packet.data(1, b"a" * 512), TID)
    assert port.take() == [(packet.error(3, "Disk full or allocation exceeded"), TID)]
    failure = outcome(d)
    assert failure.check(OSError) and failure.value.errno == errno.ENOSPC
    assert writer.aborted and port.stopped


class Consumer:
    def __init__(self):
        self.producer, self.data, self.unregistered = None, [], False

    def registerProducer(self, producer, streaming):
        assert streaming
        self.producer = producer

    def unregisterProducer(self):
        self.unregistered = True

    def write(self, data):
        self.data.append(data)
        self.producer.pauseProducing()


def test_a_consumer_pauses_the_reading(reactor):
    from twisted.internet.interfaces import IConsumer
    from zope.interface import directlyProvides

    consumer = Consumer()
    directlyProvides(consumer, IConsumer)
    d = get(reactor, "127.0.0.1", "f", blksize=512, tsize=False, to=consumer)
    port = reactor.ports[0]
    port.protocol.datagramReceived(packet.data(1, b"a" * 512), TID)
    assert not port.reading and consumer.data == [b"a" * 512]
    consumer.producer.resumeProducing()
    assert port.reading
    port.protocol.datagramReceived(packet.data(2, b""), TID)
    assert outcome(d).data is None and consumer.unregistered


@implementer(IReader)
class SlowReader:
    """Answers every read with a Deferred the test fires."""

    size = None

    def __init__(self):
        self.calls, self.closed = [], False

    def read(self, n):
        d = Deferred()
        self.calls.append((n, d))
        return d

    def close(self):
        self.closed = True


def test_an_upload_waits_for_a_reader_that_answers_later(reactor):
    reader = SlowReader()
    d = put(reactor, "127.0.0.1", "up", source=reader, blksize=8, windowsize=2)
    port = reactor.ports[0]
    assert port.take()[0][0] == packet.request(packet.WRQ, "up", "octet", {"blksize": "8", "windowsize": "2"})
    port.protocol.datagramReceived(packet.oack({"blksize": "8", "windowsize": "2"}), TID)
    assert len(reader.calls) == 1 and port.take() == []
    reader.calls[0][1].callback(b"12345678")
    assert port.take() == [(packet.data(1, b"12345678"), TID)] and len(reader.calls) == 2
    reader.calls[1][1].callback(b"end")
    assert port.take() == [(packet.data(2, b"end"), TID)]
    port.protocol.datagramReceived(packet.ack(2), TID)
    result = outcome(d)
    assert result.record.bytes_transferred == 11 and result.record.bytes_sent == 11 and reader.closed
    assert port.stopped


@implementer(IWriter)
class StuckWriter:
    """Its first write never finishes."""

    def __init__(self):
        self.writes, self.aborted, self.committed = 0, False, False

    def write(self, data):
        self.writes += 1
        return Deferred()

    def commit(self):
        self.committed = True

    def abort(self):
        self.aborted = True


def test_a_local_write_that_never_finishes_fails_the_download_in_the_schedules_time(reactor):
    writer = StuckWriter()
    schedule = Schedule.parse("1,2")
    d = get(reactor, "127.0.0.1", "f", blksize=512, tsize=False, to=writer, schedule=schedule)
    port = reactor.ports[0]
    port.protocol.datagramReceived(packet.data(1, b"a" * 512), TID)
    port.protocol.datagramReceived(packet.data(2, b"end"), TID)
    reactor.advance(schedule.total - 0.1)
    assert outcome(d) is None
    reactor.advance(0.2)
    failure = outcome(d)
    assert failure.check(errors.TFTPError) and "did not finish" in failure.getErrorMessage()
    assert writer.aborted and not writer.committed and writer.writes == 1 and reactor.getDelayedCalls() == []


def test_an_upload_whose_reader_never_answers_fails_in_the_schedules_time(reactor):
    reader = SlowReader()
    schedule = Schedule.parse("1,2")
    d = put(reactor, "127.0.0.1", "up", source=reader, blksize=8, schedule=schedule)
    port = reactor.ports[0]
    port.protocol.datagramReceived(packet.oack({"blksize": "8"}), TID)
    assert len(reader.calls) == 1
    reactor.advance(schedule.total + 0.1)
    failure = outcome(d)
    assert failure.check(errors.TFTPError) and reader.closed
    assert (packet.error(0, "The local read did not finish in 3s"), TID) in port.take()


def test_cancelling_after_the_exchange_ended_still_aborts_the_writer(reactor):
    writer = StuckWriter()
    d = get(reactor, "127.0.0.1", "f", blksize=512, tsize=False, to=writer)
    port = reactor.ports[0]
    port.protocol.datagramReceived(packet.data(1, b"end"), TID)
    reactor.advance(10)  # the dally is over: the port is closed, the write still pending
    d.cancel()
    assert outcome(d).check(CancelledError) and writer.aborted and not writer.committed


@implementer(IWriter)
class SlowWriter:
    """Each write returns a Deferred the test fires."""

    def __init__(self):
        self.calls, self.data, self.committed = [], [], False

    def write(self, data):
        d = Deferred()
        self.calls.append(d)
        self.data.append(data)
        return d

    def commit(self):
        self.committed = True

    def abort(self):
        pass


def test_a_writer_that_falls_behind_stops_the_reading_until_it_catches_up(reactor, monkeypatch):
    from txfbtftp.client import _files
    monkeypatch.setattr(_files, "BACKLOG", 4 * 512)
    writer = SlowWriter()
    d = get(reactor, "127.0.0.1", "f", blksize=512, tsize=False, to=writer)
    port = reactor.ports[0]
    port.take()
    blocks = [bytes([n]) * 512 for n in range(1, 6)]
    for n, block in enumerate(blocks, 1):
        port.protocol.datagramReceived(packet.data(n, block), TID)
    # block 1 is being written; 2..5 wait in memory: a full backlog
    assert not port.reading and [p for p, _ in port.take()] == [packet.ack(n) for n in range(1, 6)]
    reactor.advance(30)  # the watchdog waits for the writer, the server is not pestered
    assert port.take() == [] and outcome(d) is None
    writer.calls[0].callback(None)
    writer.calls[1].callback(None)
    assert not port.reading  # 4 and 5 still wait: half the backlog
    writer.calls[2].callback(None)
    assert port.reading
    reactor.advance(0)
    assert [p for p, _ in port.take()] == [packet.ack(5)]  # the watchdog, overdue, asks again
    port.protocol.datagramReceived(packet.data(6, b"end"), TID)
    while not writer.calls[-1].called:
        writer.calls[-1].callback(None)
    result = outcome(d)
    assert result.data is None and writer.data == blocks + [b"end"] and writer.committed


def test_a_slow_writer_that_keeps_writing_is_given_the_patience_for_each_write(reactor):
    writer = SlowWriter()
    schedule = Schedule.parse("1,2")
    d = get(reactor, "127.0.0.1", "f", blksize=512, tsize=False, to=writer, schedule=schedule)
    port = reactor.ports[0]
    for n in range(1, 5):
        port.protocol.datagramReceived(packet.data(n, bytes([n]) * 512), TID)
    port.protocol.datagramReceived(packet.data(5, b"end"), TID)
    for _ in range(5):  # 2 s a write, 10 s in all: each within the 3 s patience
        reactor.advance(2)
        assert outcome(d) is None
        writer.calls[-1].callback(None)
    result = outcome(d)
    assert result.data is None and len(writer.data) == 5 and writer.committed


@implementer(IWriter)
class MostlyQuickWriter:
    """Its first write is slow (a Deferred the test fires), every other one
    answers with a Deferred that has already fired."""

    def __init__(self):
        from twisted.internet.defer import succeed
        self.succeed, self.slow, self.data, self.committed = succeed, Deferred(), [], False

    def write(self, data):
        self.data.append(data)
        return self.slow if len(self.data) == 1 else self.succeed(None)

    def commit(self):
        self.committed = True

    def abort(self):
        pass


def test_a_long_queue_behind_one_slow_write_drains_without_recursion(reactor):
    writer = MostlyQuickWriter()
    d = get(reactor, "127.0.0.1", "f", blksize=512, tsize=False, to=writer)
    port = reactor.ports[0]
    for n in range(1, 1501):
        port.protocol.datagramReceived(packet.data(n, n.to_bytes(2, "big") * 256), TID)
    port.protocol.datagramReceived(packet.data(1501, b"end"), TID)
    writer.slow.callback(None)
    result = outcome(d)
    assert result.data is None and len(writer.data) == 1501 and writer.committed
