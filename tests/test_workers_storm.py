"""A UEFI boot storm through ``--workers 2``: every client served, nobody confused.

Why: a UEFI storm through several processes once lost half its clients.
What a storm does that one client does not: EDK2's PXE client asks for a
file twice, first with ``tsize 0`` added, only to learn the size, and aborts
that answer (the OACK) with ERROR 8; then again from a new source port, with
``blksize 1468`` and ``windowsize 4``, and reads the file.  Three hundred of
them at once against a server of two processes: the kernel spreads loopback
requests over the processes by address and port, so a client's probe and
its download may meet different processes, and some clients send a request
twice, as one whose retransmission crossed the server's answer does (the
copy must be answered again, not served as a new transfer).

What it proves: each client gets its file byte for byte; no client sees an
ERROR, a packet from a transfer ID other than the one it locked on after its
first reply, or an OACK with an option it did not ask for; and the server's
own counters, summed over its processes on ``--metrics``, agree: 300 probes,
300 downloads, nothing refused, lost or malformed.

The clients are one thread and one epoll set over their sockets, with a 1 s
retransmit timer, as a firmware's would be, and a bound on the whole run.
Each keeps its probe's socket open to the end: the kernel would otherwise
give that port to another client's download while the probe's session may
still be open, and a new request from the same address and port rightly
ends the session before it.
"""
import os
import selectors
import socket
import time
import urllib.request

import pytest

from txfbtftp._protocol import packet

from . import processes
from .processes import TWISTD, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLIENTS = 300
NAME = "uefi.efi"
CONTENT = os.urandom(192 * 1024 + 321)  # 135 blocks of 1468, the last one short
BLKSIZE, WINDOW = 1468, 4
PROBE_OPTIONS = {"blksize": str(BLKSIZE), "tsize": "0", "windowsize": str(WINDOW)}
OPTIONS = {"blksize": str(BLKSIZE), "windowsize": str(WINDOW)}
PROBE = packet.request(packet.RRQ, NAME, "octet", PROBE_OPTIONS)
REQUEST = packet.request(packet.RRQ, NAME, "octet", OPTIONS)
RETRANSMIT, RETRIES, LIMIT = 1.0, 8, 60.0


class UefiClient:
    """One machine: the tsize probe, ERROR 8, then the download from a new port
    (the probe's stays open: a late packet to it is seen too)."""

    def __init__(self, storm, index):
        self.storm, self.index = storm, index
        self.probe_sock = self.probe_tid = self.sock = self.tid = None
        self.state = "probe"
        self.blocks, self.expect, self.since_ack, self.gap_acked = [], 1, 0, False
        self.retries, self.deadline = 0, 0.0
        self.errors, self.unknown_tid, self.bad_oack, self.oack = [], 0, [], None
        self.probe_tsize, self.failure = None, None

    def start(self):
        self.probe_sock = self.storm.open(self, "probe")
        self._request(self.probe_sock, PROBE, 2 if self.index % 5 == 0 else 1)

    def _request(self, sock, request, copies):
        """``copies`` 2: a repeat that crossed the server's answer."""
        for _ in range(copies):
            sock.sendto(request, self.storm.server)
        self._arm()

    def _arm(self):
        self.retries = 0
        self.deadline = time.monotonic() + RETRANSMIT

    def _ack(self, block):
        self.sock.sendto(packet.ack(block & 0xFFFF), self.tid)

    def timeout(self, now):
        if now < self.deadline or self.state == "done":
            return
        if self.retries >= RETRIES:
            self._fail("no progress after %d retransmits (%s)" % (RETRIES, self.state))
            return
        self.retries += 1
        self.storm.retransmits += 1
        self.deadline = now + RETRANSMIT
        if self.state == "probe":
            self.probe_sock.sendto(PROBE, self.storm.server)
        elif self.state == "wait":
            self.sock.sendto(REQUEST, self.storm.server)
        else:
            self._ack(self.expect - 1)  # the last block in order (0: the OACK)

    # -- receiving ------------------------------------------------------------------
    def received(self, phase, data, addr):
        if phase == "probe":
            if self.probe_tid is None:
                self.probe_tid = addr  # the first reply locks the server's transfer ID
            elif addr != self.probe_tid:
                self.unknown_tid += 1
                return
        else:
            if self.tid is None:
                self.tid = addr
            elif addr != self.tid:
                self.unknown_tid += 1
                return
        op = packet.opcode_of(data)
        if op == packet.ERROR:
            self.errors.append(data)
            self._fail("ERROR from the server: %r" % data)
        elif op == packet.OACK:
            oack = packet.parse_oack(data)
            if set(oack) - set(PROBE_OPTIONS if phase == "probe" else OPTIONS):
                self.bad_oack.append(oack)
            if phase == "probe" and self.state == "probe":
                self._probed(oack)
            elif phase == "main" and self.state == "wait":
                self.oack = oack
                self.state = "xfer"
                self._ack(0)
                self._arm()
            # else the OACK again, for a copy of the request: already answered
        elif op == packet.DATA and phase == "main" and self.state == "xfer":
            self._data(data)
        elif op == packet.DATA and phase == "main" and self.state == "done":
            pass  # the last window again (our final ACK was lost): nothing to do
        else:
            self._fail("unexpected opcode %s on the %s port (%s)" % (op, phase, self.state))

    def _probed(self, oack):
        self.probe_tsize = oack.get("tsize")
        self.probe_sock.sendto(packet.error(packet.ERR_OPTIONS, "User aborted the transfer"), self.probe_tid)
        self.state = "wait"
        self.sock = self.storm.open(self, "main")
        self._request(self.sock, REQUEST, 2 if self.index % 3 == 0 else 1)

    def _data(self, data):
        block = (data[2] << 8) | data[3]
        expect = self.expect & 0xFFFF
        if block == expect:
            self.blocks.append(data[4:])
            self.expect += 1
            self.since_ack += 1
            self.gap_acked = False
            self._arm()
            last = len(data) - 4 < BLKSIZE
            if last or self.since_ack >= WINDOW:
                self._ack(block)
                self.since_ack = 0
            if last:
                self.state = "done"
                self.storm.finished += 1
        elif 0 < (block - expect) & 0xFFFF < 0x8000 and not self.gap_acked:
            self.storm.gaps += 1
            self.gap_acked = True  # once per gap: the server restarts the window from there
            self.since_ack = 0
            self._ack(self.expect - 1)

    def _fail(self, why):
        if self.failure is None:
            self.failure = why
            if self.state != "done":
                self.state = "done"
                self.storm.finished += 1

    @property
    def data(self):
        return b"".join(self.blocks)


class Storm:
    """Runs the clients in one thread over one epoll set."""

    def __init__(self, server, n):
        self.server = server
        self.selector = selectors.DefaultSelector()
        self.sockets = []
        self.clients = [UefiClient(self, i) for i in range(n)]
        self.finished = self.retransmits = self.gaps = 0

    def open(self, client, phase):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sockets.append(s)
        s.setblocking(False)
        s.bind(("127.0.0.1", 0))
        self.selector.register(s, selectors.EVENT_READ, (client, phase))
        return s

    def _poll(self, timeout):
        for key, _ in self.selector.select(timeout):
            client, phase = key.data
            while True:
                try:
                    data, addr = key.fileobj.recvfrom(65536)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    continue  # an ICMP error for something we sent: not a packet
                client.received(phase, data, addr)

    def run(self, limit=LIMIT):
        """Start every client at once; the seconds until the last is done."""
        start = time.monotonic()
        for c in self.clients:
            c.start()
        next_check = start
        while self.finished < len(self.clients):
            now = time.monotonic()
            if now - start > limit:
                for c in self.clients:
                    c._fail("still at %s after %.0f s" % (c.state, limit))
                break
            self._poll(0.05)
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 0.05
                for c in self.clients:
                    c.timeout(now)
        return time.monotonic() - start

    def drain(self, seconds):
        """What still arrives within ``seconds``: late packets, strays."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._poll(left)

    def close(self):
        self.selector.close()
        for s in self.sockets:
            s.close()


@pytest.fixture
def server(tmp_path):
    (tmp_path / NAME).write_bytes(CONTENT)
    for attempt in range(5):
        port, metrics = free_port(), free_port()
        s = processes.Server(TWISTD + ["-n", "--pidfile=", "tftp", "--backend", "fs:%s" % tmp_path,
                                       "--interface", "127.0.0.1", "--port", str(port), "--workers", "2",
                                       "--metrics", "tcp:%d:interface=127.0.0.1" % metrics,
                                       "--stats-interval", "0"], cwd=REPO)
        try:
            s.ready(count=2)
            break
        except AssertionError:
            s.stop()
            if "address already in use" not in s.log or attempt == 4:
                raise  # else another program took a free port first: another pair
    try:
        yield s, ("127.0.0.1", port), metrics
    finally:
        s.stop()


def scrape(port):
    """The counters of ``/metrics``, by name with labels: ``{'tftp_x{a="b"}': 1.0}``."""
    page = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read().decode()
    out = {}
    for line in page.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def outcomes(metrics):
    """``tftp_sessions_total`` by outcome, summed over the other labels."""
    by = {}
    for name, value in metrics.items():
        if name.startswith("tftp_sessions_total{"):
            outcome = name.split('outcome="', 1)[1].split('"', 1)[0]
            by[outcome] = by.get(outcome, 0) + value
    return by


def test_a_uefi_storm_through_two_workers(server):
    s, where, metrics_port = server
    storm = Storm(where, CLIENTS)
    try:
        seconds = storm.run()
        storm.drain(0.3)  # a packet from an unknown TID may come after the client is done
    finally:
        storm.close()
    clients = storm.clients
    seen = {
        "failed": sum(c.failure is not None for c in clients),
        "not verified": sum(c.data != CONTENT for c in clients),
        "ERROR packets": sum(len(c.errors) for c in clients),
        "packets from unknown TIDs": sum(c.unknown_tid for c in clients),
        "OACKs with options not asked for": sum(len(c.bad_oack) for c in clients),
        "downloads not negotiated as asked": sum(c.oack != OPTIONS for c in clients),
        "probes without the size": sum(c.probe_tsize != str(len(CONTENT)) for c in clients),
    }
    assert seen == dict.fromkeys(seen, 0), "%d clients in %.1f s: %s; e.g. %s" % (
        CLIENTS, seconds, seen, [(c.index, c.failure) for c in clients if c.failure][:3])

    # The server's counters, from both processes (the workers report every 0.1 s).
    want = {"ok": CLIENTS, "tsize_probe": CLIENTS}
    deadline = time.monotonic() + 10
    while True:
        m = scrape(metrics_port)
        if outcomes(m) == want or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert outcomes(m) == want
    assert m["tftp_sessions_started_total"] == 2 * CLIENTS
    assert m["tftp_sessions_active"] == 0
    for name in ("requests_refused_busy", "sessions_lost", "malformed_packets", "requests_over_budget",
                 "packets_withheld", "errors_suppressed"):
        assert m["tftp_%s_total" % name] == 0, name
    served = [line for line in s.lines if "RRQ '%s'" % NAME in line]
    by_worker = sum("] worker 1: " in line for line in served)
    assert 0 < by_worker < len(served), "both processes served: %d of %d by the worker" % (by_worker, len(served))
