"""The client's side of the machines (txfbtftp._protocol.client), on a fake clock."""
import pytest

from txfbtftp import AccessViolation, FileNotFound, Schedule, TFTPError, TFTPTimeout
from txfbtftp._protocol import errors, packet
from txfbtftp._protocol.client import ClientTransfer, request_options


def test_request_options_leave_out_the_defaults_and_check_ranges():
    assert request_options() == {}
    assert request_options(512, 1, None) == {}
    assert request_options(1468, 16, 0, timeout=3) == {"blksize": "1468", "windowsize": "16", "tsize": "0",
                                                        "timeout": "3"}
    assert request_options(utimeout=20000) == {"utimeout": "20000"}
    for bad in (dict(blksize=7), dict(blksize=65465), dict(windowsize=0), dict(windowsize=32768),
                dict(timeout=0), dict(timeout=256), dict(utimeout=9999), dict(tsize=-1),
                dict(timeout=1, utimeout=100000)):
        with pytest.raises(ValueError):
            request_options(**bad)


def test_a_lossless_download_counts_both_phases():
    t = ClientTransfer("f", options={"blksize": "8", "tsize": "0"})
    out = []
    t.start(10.0, out)
    assert out == [packet.request(packet.RRQ, "f", "octet", {"blksize": "8", "tsize": "0"})]
    out.clear()
    t.receive(packet.oack({"blksize": "8", "tsize": "12"}), 10.5, out)
    assert out == [packet.ack(0)] and t.tsize == 12 and t.first_reply_at == 10.5
    out.clear()
    assert t.receive(packet.data(1, b"12345678"), 10.6, out) == b"12345678"
    assert t.receive(packet.data(2, b"9012"), 10.7, out) == b"9012"
    assert out == [packet.ack(1), packet.ack(2)] and t.complete and not t.finished  # dallies (0 s)
    t.timeout(10.7, out)
    assert t.finished
    assert (t.packets_sent, t.packets_received, t.retransmits, t.duplicates) == (4, 3, 0, 0)
    assert t.error() is None


def test_a_repeated_oack_is_answered_again_not_refused():
    t = ClientTransfer("f", options={"blksize": "1468"})
    out = []
    t.start(0.0, out)
    oack = packet.oack({"blksize": "1468"})
    t.receive(oack, 0.1, out)
    out.clear()
    t.receive(oack, 1.1, out)  # our ACK 0 was lost
    assert out == [packet.ack(0)] and not t.finished
    assert t.retransmits == 1 and t.packets_received == 2
    out.clear()
    t.receive(packet.data(1, b"x"), 1.2, out)
    assert t.complete and out == [packet.ack(1)]
    t.receive(oack, 1.3, out)  # a stray copy after the data: ignored
    assert out == [packet.ack(1)]


def test_an_upload_ignores_a_repeated_oack_its_timer_resends():
    t = ClientTransfer("f", write=True, options={"blksize": "8"})
    out = []
    t.start(0.0, out)
    t.receive(packet.oack({"blksize": "8"}), 0.1, out)
    assert t.wants == 1
    out.clear()
    t.feed(b"abc", 0.1, out)
    assert out == [packet.data(1, b"abc")]
    out.clear()
    t.receive(packet.oack({"blksize": "8"}), 0.2, out)
    assert out == [] and not t.finished
    t.receive(packet.ack(1), 0.3, out)
    assert t.complete and t.finished


def test_silence_ends_on_the_schedule_with_a_timeout():
    t = ClientTransfer("f", schedule=Schedule.parse("1,2"))
    out = []
    t.start(0.0, out)
    assert t.deadline == 1.0
    t.timeout(1.0, out)
    assert len(out) == 2 and out[0] == out[1] and t.deadline == 3.0
    t.timeout(3.0, out)
    assert t.finished and len(out) == 2
    err = t.error()
    assert isinstance(err, TFTPTimeout) and isinstance(err, TFTPError)
    assert (t.requests_sent, t.retransmits) == (2, 1)


@pytest.mark.parametrize("code, cls", [(1, FileNotFound), (2, AccessViolation), (3, errors.DiskFull),
                                       (4, errors.Unsupported), (6, errors.FileExists),
                                       (8, errors.OptionsRefused)])
def test_a_servers_error_becomes_the_backends_exception(code, cls):
    t = ClientTransfer("f")
    t.start(0.0, [])
    t.receive(packet.error(code, "no"), 0.1, [])
    err = t.error()
    assert type(err) is cls and err.code == code and err.message == "no"
    assert t.outcome.value == "server-error"


@pytest.mark.parametrize("code", [0, 5, 7, 42])
def test_codes_without_a_class_keep_their_code(code):
    err = errors.from_code(code, "")
    assert type(err) is TFTPError and err.code == code and err.message
    assert TFTPError.code == 0  # the class is untouched


def test_an_oack_with_more_than_was_asked_is_refused_with_error_8():
    t = ClientTransfer("f", options={"blksize": "512"})
    out = []
    t.start(0.0, out)
    out.clear()
    t.receive(packet.oack({"blksize": "1024"}), 0.1, out)
    assert out == [packet.error(8, "Bad blksize")] and t.finished
    assert isinstance(t.error(), errors.OptionsRefused) and t.outcome.value == "client-error"
    assert t.packets_sent == 2
