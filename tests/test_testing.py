"""txfbtftp.testing: the real server and a client of the same machines, in memory, on a clock."""
import os

import pytest
from twisted.internet import defer
from zope.interface import implementer

from txfbtftp import BytesReader, IBackend, MemoryBackend, Schedule, ServerConfig
from txfbtftp.testing import MemoryServer

DATA = os.urandom(300_001)


@pytest.fixture
def server():
    return MemoryServer(MemoryBackend({"kernel": DATA, "empty": b"", "menu.txt": b"a\nb\r\n"}, writable=True))


@pytest.mark.parametrize("options", [None, {"blksize": "1468"}, {"blksize": "1468", "windowsize": "16"},
                                     {"blksize": "8", "windowsize": "3", "tsize": "0"}])
def test_downloads_are_whole_and_recorded(server, options):
    got = server.get("kernel", options)
    assert got.ok and got.data == DATA
    assert got.record.reason == "ok" and got.record.bytes_transferred == len(DATA)
    assert got.options == {k: (str(len(DATA)) if k == "tsize" else v) for k, v in (options or {}).items()}
    assert server.clock.seconds() == 0  # nothing was lost: no timer ever fired


def test_uploads_land_in_the_backend(server):
    got = server.put("up.bin", DATA, {"blksize": "1024", "windowsize": "4"})
    assert got.ok and got.record.reason == "ok" and got.record.bytes_transferred == len(DATA)
    assert server.protocol.backend.files["up.bin"] == DATA


def test_errors_come_back_as_the_client_sees_them(server):
    got = server.get("missing")
    assert (got.ok, got.outcome, got.error_code, got.error_message) == (False, "server-error", 1, "File not found")
    assert got.record.reason == "not_found"
    assert server.put("kernel", b"x").error_code == 6  # create-only


def test_netascii_is_converted_both_ways(server):
    assert server.get("menu.txt", mode="netascii").data == b"a\r\nb\r\x00\r\n"


def test_lost_packets_are_retransmitted_on_the_clock(server):
    dropped = []

    def lose(to_server, packet):
        if not to_server and packet[:4] == b"\0\3\0\5" and not dropped:
            dropped.append(packet)
            return True
        return False

    got = server.get("kernel", lose=lose)
    assert got.ok and got.data == DATA and dropped
    assert got.record.retransmits == 1 and 0.05 <= server.clock.seconds() < 0.06  # the adaptive timer's floor


@implementer(IBackend)
class Later:
    """Answers after ``delay`` seconds of the clock, or never."""

    def __init__(self, clock, delay):
        self.clock, self.delay = clock, delay

    def get_reader(self, path, request):
        d = defer.Deferred()
        if self.delay is not None:
            self.clock.callLater(self.delay, d.callback, BytesReader(b"late"))
        return d


def test_slow_and_stalled_backends_meet_the_watchdog():
    server = MemoryServer(MemoryBackend())
    server.protocol.backend = Later(server.clock, 2.0)
    assert server.get("x", schedule=Schedule.parse("1,2,4")).data == b"late"
    config = ServerConfig(schedule=Schedule.parse("1,1"))
    stalled = MemoryServer(MemoryBackend(), config)
    stalled.protocol.backend = Later(stalled.clock, None)
    got = stalled.get("x")
    assert (got.error_code, got.error_message) == (0, "Timed out fetching the file")
    assert stalled.clock.seconds() == 2  # the schedule's patience
