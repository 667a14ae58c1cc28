"""The session machines, driven by hand with explicit times (a fake clock)."""
import pytest

from txfbtftp._protocol import packet
from txfbtftp._protocol.schedule import RTOEstimator, Schedule, Watchdog
from txfbtftp._protocol.machine import Outcome, State, block_offset, wire
from txfbtftp._protocol.read import ReadMachine
from txfbtftp._protocol.write import WriteMachine

SCHED = Schedule.parse("1,2,4,8,16,32")


class Out(list):
    def opcodes(self):
        return [packet.opcode_of(p) for p in self]

    def blocks(self, op=packet.DATA):
        return [(p[2] << 8) | p[3] for p in self if packet.opcode_of(p) == op]

    def take(self):
        out = Out(self)
        del self[:]
        return out


class Stepped:
    """A machine whose every step appends to ``out``, as a driver's outbox;
    payloads an upload hands back are collected in ``got``."""

    def __init__(self, machine, out, got=None):
        self.__dict__.update(_m=machine, _out=out, _got=got)

    def __getattr__(self, name):
        return getattr(self._m, name)

    def start(self, now):
        self._m.start(now, self._out)

    def feed(self, payload, now):
        return self._m.feed(payload, now, self._out)

    def receive(self, data, now):
        payload = self._m.receive(data, now, self._out)
        if payload is not None:
            self._got.append(payload)

    def timeout(self, now):
        self._m.timeout(now, self._out)

    def fail(self, code, message):
        self._m.fail(code, message, self._out)

    def committed(self, now):
        self._m.committed(now, self._out)


def reader(data, blksize=512, windowsize=1, oack=None, estimator=None, rollover=0):
    out = Out()
    m = Stepped(ReadMachine(Watchdog(SCHED, estimator), blksize, windowsize, rollover, oack), out)
    src = {"pos": 0}

    def pump(now):
        while m.wants > 0:
            chunk = data[src["pos"]:src["pos"] + blksize]
            src["pos"] += len(chunk)
            m.feed(chunk, now)
    return m, out, pump


def ack(n):
    return packet.ack(n)


def test_wire_and_offsets_wrap():
    assert wire(65535) == 65535 and wire(65536) == 0 and wire(65537) == 1
    assert wire(65536, 1) == 1 and wire(65536 + 65534, 1) == 65535 and wire(65536 + 65535, 1) == 1
    assert block_offset(0, 65535) == 1
    assert block_offset(65535, 0 + 65536) == -1
    assert block_offset(1, 65536 + 65534, 1) == 1  # 65535 -> 1 with rollover 1
    assert block_offset(2, 65535, 1) == 2


def test_lockstep_without_options():
    data = b"x" * 1300
    m, out, pump = reader(data)
    m.start(0)
    pump(0)
    assert out.take().blocks() == [1]
    for n, now in ((1, 0.1), (2, 0.2)):
        m.receive(ack(n), now)
        pump(now)
    assert out.take().blocks() == [2, 3]
    m.receive(ack(3), 0.3)
    assert m.finished and m.outcome is Outcome.OK and m.bytes == 1300


def test_exact_multiple_ends_with_an_empty_block():
    m, out, pump = reader(b"y" * 1024)
    m.start(0)
    pump(0)
    for n in (1, 2):
        m.receive(ack(n), n)
        pump(n)
    assert out.blocks() == [1, 2, 3] and len(out[-1]) == 4
    m.receive(ack(3), 3)
    assert m.outcome is Outcome.OK


def test_oack_acked_ten_seconds_late_is_served():
    """A slow PXE ROM: the OACK is resent on schedule and the late ACK 0 starts the transfer."""
    oack = packet.oack({"blksize": "1468", "tsize": "100"})
    m, out, pump = reader(b"z" * 100, blksize=1468, oack=oack)
    m.start(0)
    assert out.take() == [oack] and m.deadline == 1
    for t in (1, 3, 7):  # the watchdog fires at 1, 3 and 7 s
        m.timeout(t)
    assert out.take() == [oack] * 3 and m.deadline == 15
    m.receive(ack(0), 10.0)
    pump(10.0)
    assert out.take().blocks() == [1] and m.state is State.TRANSFER
    m.receive(ack(1), 10.1)
    assert m.outcome is Outcome.OK and m.retransmits == 3


def test_first_data_acked_ten_seconds_late():
    m, out, pump = reader(b"a" * 10)
    m.start(0)
    pump(0)
    for t in (1, 3, 7):
        m.timeout(t)
    assert out.blocks() == [1, 1, 1, 1]
    m.receive(ack(1), 10)
    assert m.outcome is Outcome.OK


def test_silent_client_times_out_after_the_schedule():
    m, out, pump = reader(b"a" * 10)
    m.start(0)
    pump(0)
    t = 0
    for w in SCHED.waits:
        t += w
        m.timeout(t)
    assert m.outcome is Outcome.TIMEOUT and m.finished
    assert m.retransmits == len(SCHED.waits) - 1
    m.receive(ack(1), t + 1)  # a packet after expiry changes nothing
    assert m.outcome is Outcome.TIMEOUT


def test_timeout_before_deadline_does_nothing():
    m, out, pump = reader(b"a" * 10)
    m.start(0)
    pump(0)
    m.timeout(0.5)
    assert out.blocks() == [1] and m.retransmits == 0


def test_duplicate_acks_never_retransmit():
    m, out, pump = reader(b"q" * 5000)
    m.start(0)
    pump(0)
    m.receive(ack(1), 0.1)
    pump(0.1)
    out.take()
    for _ in range(5):
        m.receive(ack(1), 0.2)
        pump(0.2)
    assert out == [] and m.duplicates == 5 and m.retransmits == 0


def test_error_8_after_oack_is_a_tsize_probe():
    oack = packet.oack({"tsize": "100"})
    m, out, pump = reader(b"z" * 100, oack=oack)
    m.start(0)
    m.receive(packet.error(8, "User aborted"), 0.01)
    assert m.outcome is Outcome.CLIENT_ERROR and m.error_code == 8 and m.tsize_probe
    assert out.opcodes() == [packet.OACK]  # never answer an ERROR


def test_client_error_mid_transfer_ends_quietly():
    m, out, pump = reader(b"q" * 5000)
    m.start(0)
    pump(0)
    m.receive(ack(1), 0.1)
    pump(0.1)
    out.take()
    m.receive(packet.error(0, "cancelled"), 0.2)
    assert m.finished and m.outcome is Outcome.CLIENT_ERROR and not m.tsize_probe
    assert out == [] and m.deadline is None


def test_unexpected_opcode_gets_error_4():
    m, out, pump = reader(b"q" * 5000)
    m.start(0)
    pump(0)
    out.take()
    m.receive(packet.data(1, b"x"), 0.1)
    assert out.opcodes() == [packet.ERROR] and packet.parse_error(out[0]).code == 4
    assert m.outcome is Outcome.SERVER_ERROR


def test_window_sent_whole_and_slid_from_a_partial_ack():
    oack = packet.oack({"windowsize": "4"})
    m, out, pump = reader(bytes(512 * 10 + 1), windowsize=4, oack=oack)
    m.start(0)
    m.receive(ack(0), 0.1)
    pump(0.1)
    assert out.take().blocks() == [1, 2, 3, 4]
    m.receive(ack(2), 0.2)  # 3 and 4 lost: resend from 3, then fill
    pump(0.2)
    assert out.take().blocks() == [3, 4, 5, 6]
    m.receive(ack(6), 0.3)
    pump(0.3)
    assert out.take().blocks() == [7, 8, 9, 10]
    m.receive(ack(10), 0.4)
    pump(0.4)
    assert out.take().blocks() == [11]
    m.receive(ack(11), 0.5)
    assert m.outcome is Outcome.OK and m.bytes == 512 * 10 + 1


def test_gap_ack_for_the_window_base_restarts_once():
    oack = packet.oack({"windowsize": "4"})
    m, out, pump = reader(bytes(512 * 20), windowsize=4, oack=oack)
    m.start(0)
    m.receive(ack(0), 0.1)
    pump(0.1)
    m.receive(ack(4), 0.2)
    pump(0.2)
    out.take()
    m.receive(ack(4), 0.21)  # block 5 was lost: the client reports the gap
    assert out.take().blocks() == [5, 6, 7, 8]
    m.receive(ack(4), 0.22)  # the same report again is a duplicate
    assert out.take() == []


def test_window_timeout_resends_the_window():
    oack = packet.oack({"windowsize": "3"})
    m, out, pump = reader(bytes(512 * 10), windowsize=3, oack=oack)
    m.start(0)
    m.receive(ack(0), 0.1)
    pump(0.1)
    out.take()
    m.timeout(m.deadline)
    assert out.take().blocks() == [1, 2, 3] and m.retransmits == 3


def test_rtt_estimated_with_karn_and_timer_adapts():
    est = RTOEstimator(floor=0.05)
    oack = packet.oack({"blksize": "512"})
    m, out, pump = reader(bytes(512 * 50), oack=oack, estimator=est)
    m.start(0)
    m.receive(ack(0), 3.0)  # the first exchange is not timed
    assert est.srtt is None
    pump(3.0)
    now = 3.0
    for n in range(1, 5):
        now += 0.002
        m.receive(ack(n), now)
        pump(now)
    assert est.srtt == pytest.approx(0.002)
    assert m.deadline == pytest.approx(now + 0.05)  # floor, not a second
    m.timeout(m.deadline)  # block 5 lost: resent after 50 ms
    assert out.blocks()[-1] == 5 and m.retransmits == 1
    srtt = est.srtt
    m.receive(ack(5), m.deadline - 0.01)  # Karn: an ACK of a resent block is not timed
    assert est.srtt == srtt


def test_blocks_wrap_past_65535():
    m, out, pump = reader(bytes(8 * 70000 + 3), blksize=8)
    m.start(0)
    pump(0)
    n = 1
    while not m.finished:
        m.receive(ack(wire(n)), n * 1e-6)
        pump(n * 1e-6)
        n += 1
    assert m.outcome is Outcome.OK and n - 1 == 70001
    blocks = out.blocks()
    assert blocks[65534:65538] == [65535, 0, 1, 2]


def test_rollover_1_wraps_to_one():
    m, out, pump = reader(bytes(8 * 65537), blksize=8, rollover=1, oack=packet.oack({"rollover": "1"}))
    m.start(0)
    m.receive(ack(0), 0)
    pump(0)
    n = 1
    while not m.finished:
        m.receive(ack(wire(n, 1)), 0)
        pump(0)
        n += 1
    assert out.blocks()[65534:] == [65535, 1, 2, 3]  # 65537 full blocks and an empty one


# -- uploads --------------------------------------------------------------------

def writer(blksize=512, windowsize=1, oack=None, max_size=None):
    out, got = Out(), []
    m = Stepped(WriteMachine(Watchdog(SCHED), blksize, windowsize, 0, oack, max_size, dally=5), out, got)
    return m, out, got


def test_upload_lockstep_commit_then_final_ack_and_dally():
    m, out, got = writer()
    m.start(0)
    assert out.take() == [packet.ack(0)]
    m.receive(packet.data(1, b"a" * 512), 0.1)
    m.receive(packet.data(2, b"b" * 10), 0.2)
    assert out.take() == [packet.ack(1)]
    assert m.complete and m.state is State.COMMITTING
    m.receive(packet.data(2, b"b" * 10), 0.3)  # repeated while committing: no early ACK
    assert out == []
    m.committed(0.4)
    assert out.take() == [packet.ack(2)] and m.outcome is Outcome.OK and not m.finished
    m.receive(packet.data(2, b"b" * 10), 1.0)  # our final ACK was lost
    assert out.take() == [packet.ack(2)]
    m.timeout(5.4)
    assert m.finished and b"".join(got) == b"a" * 512 + b"b" * 10


def test_upload_duplicate_block_reacked_not_redelivered():
    m, out, got = writer()
    m.start(0)
    m.receive(packet.data(1, b"a" * 512), 0.1)
    m.receive(packet.data(1, b"a" * 512), 0.2)
    assert out.blocks(packet.ACK) == [0, 1, 1] and len(got) == 1


def test_upload_with_oack_and_window_gap():
    oack = packet.oack({"windowsize": "4"})
    m, out, got = writer(windowsize=4, oack=oack)
    m.start(0)
    assert out.take() == [oack]
    for n in (1, 2, 3, 4):
        m.receive(packet.data(n, bytes(512)), 0.1)
    assert out.take().blocks(packet.ACK) == [4]
    m.receive(packet.data(5, bytes(512)), 0.2)
    m.receive(packet.data(7, bytes(512)), 0.2)  # 6 lost
    m.receive(packet.data(8, bytes(512)), 0.2)
    assert out.take().blocks(packet.ACK) == [5]  # one ACK per gap
    assert len(got) == 5


def test_upload_limit():
    m, out, got = writer(max_size=1000)
    m.start(0)
    m.receive(packet.data(1, bytes(512)), 0.1)
    m.receive(packet.data(2, bytes(512)), 0.2)
    assert m.outcome is Outcome.SERVER_ERROR and m.error_code == packet.ERR_DISK_FULL
    assert packet.parse_error(out[-1]).code == 3


def test_upload_silent_client_times_out():
    m, out, got = writer()
    m.start(0)
    m.receive(packet.data(1, bytes(512)), 0.1)
    t = 0.1
    for w in SCHED.waits:
        t += w
        m.timeout(t)
    assert m.outcome is Outcome.TIMEOUT
    assert out.blocks(packet.ACK) == [0, 1] + [1] * (len(SCHED.waits) - 1)


def test_oversized_data_is_illegal():
    m, out, got = writer(blksize=512)
    m.start(0)
    m.receive(packet.data(1, bytes(600)), 0.1)
    assert m.error_code == 4 and got == []


def test_stale_ack_with_rollover_1_is_a_duplicate():
    oack = packet.oack({"windowsize": "4", "rollover": "1"})
    m, out, pump = reader(bytes(512 * 20), windowsize=4, oack=oack, rollover=1)
    m.start(0)
    m.receive(ack(0), 0.1)
    pump(0.1)
    m.receive(ack(4), 0.2)
    pump(0.2)
    out.take()
    m.receive(ack(3), 0.21)  # reordered, older
    assert out.take() == [] and m._acked == 4 and m.duplicates == 1


def test_padded_ack_is_an_ack():
    m, out, pump = reader(b"a" * 10)
    m.start(0)
    pump(0)
    m.receive(ack(1) + b"\x00\x00", 0.1)
    assert m.outcome is Outcome.OK


def test_receiver_timeout_acks_the_last_in_order_block():
    oack = packet.oack({"windowsize": "4"})
    m, out, got = writer(windowsize=4, oack=oack)
    m.start(0)
    for n in (1, 2, 3, 4, 5, 6):
        m.receive(packet.data(n, bytes(512)), 0.1)
    out.take()
    m.timeout(m.deadline)  # 7 and 8 lost: tell the sender to resume at 7
    assert out.take().blocks(packet.ACK) == [6]


def test_nothing_but_data_matters_while_dallying():
    m, out, got = writer()
    m.start(0)
    m.receive(packet.data(1, b"x"), 0.1)
    m.committed(0.2)
    out.take()
    m.receive(packet.ack(1), 0.3)
    assert out == [] and m.outcome is Outcome.OK
