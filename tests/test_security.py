"""Not a reflector, and no one in where they don't belong.

Amplification is bytes sent back over bytes received, IP and UDP headers
included, to a peer that never answers.  In memory (txfbtftp.testing, on a
clock) the whole default patience passes in an instant; over real UDP
between two network namespaces (tests/reflector.py) the schedule is shorter,
which changes when a server would resend, not how often.  Then: lost first
packets still recovered through the client's own repeat, access rules, and
the clean names backends are given.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
import pytest_twisted
from zope.interface import implementer

from txfbtftp import AccessRules, IBackend, MemoryBackend, Schedule, ServerConfig
from txfbtftp._protocol import packet
from txfbtftp._protocol.paths import normalize
from txfbtftp._protocol import errors
from txfbtftp.testing import MemoryServer

from . import concurrency, processes
from .namespaces import in_ns, pair
from .processes import TWISTD
from .rawclient import listen, rest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
V4 = 28  # IPv4 and UDP headers
PXELINUX = os.urandom(100_000)
FILES = {"pxelinux.0": PXELINUX, "big.bin": os.urandom(4 << 20)}
SOURCE = ("198.51.100.7", 40000)


def amplification(sent, received):
    return sum(len(d) + V4 for d in received) / sum(len(d) + V4 for d in sent)


def rrq(name, **options):
    return packet.request(packet.RRQ, name, "octet", {k: str(v) for k, v in options.items()})


@pytest.fixture
def server():
    return MemoryServer(MemoryBackend(FILES))


# -- amplification, in memory, over the whole default patience -------------------------

def test_a_plain_request_gets_one_reply(server):
    req = rrq("pxelinux.0")
    replies = server.send(req, SOURCE)
    assert [r[:4] for r in replies] == [packet.data(1, b"")]
    assert server.advance(120) == []  # DATA 1 once: not again at 1, 3, 7, 15, 31 s
    assert amplification([req], replies) <= 12
    assert server.records[-1].outcome == "timeout"


def test_a_request_with_options_gets_one_oack(server):
    req = rrq("pxelinux.0", blksize=1468, windowsize=4, tsize=0)
    replies = server.send(req, SOURCE)
    assert packet.parse_oack(replies[0]) == {"blksize": "1468", "windowsize": "4", "tsize": "100000"}
    assert server.advance(120) == []
    assert amplification([req], replies) <= 3


def test_fifty_ports_of_one_address_get_sixteen_replies(server):
    sent, replies = [], []
    for port in range(50):
        sent.append(rrq("pxelinux.0"))
        replies += server.send(sent[-1], (SOURCE[0], 30000 + port))
        server.advance(0.02)
    replies += [d for d, _ in server.advance(120)]
    assert len(replies) == 16 and amplification(sent, replies) <= 12
    assert server.stats.totals["requests_over_budget"] == 34


def test_queued_requests_count_against_the_address_budget():
    """When every slot is taken, one address that never answers cannot fill
    the queue everyone shares: its queued requests are unverified too."""
    server = MemoryServer(MemoryBackend(FILES), ServerConfig(max_sessions=2, max_queue=50,
                                                             max_unverified_per_source=4))
    for port in range(60):
        server.send(rrq("pxelinux.0"), (SOURCE[0], 30000 + port))
    other = ("198.51.100.8", 40000)
    assert server.send(rrq("pxelinux.0"), other) == []  # queued behind the two running
    totals = server.stats.totals
    assert (totals["requests_over_budget"], totals["requests_queued"], totals["requests_refused_busy"]) == (56, 3, 0)
    assert server.send(rrq("pxelinux.0"), (SOURCE[0], 30002)) == []  # a repeat keeps its place: not over budget
    assert server.stats.totals["requests_over_budget"] == 56


def test_a_spoofed_ack_in_single_port_mode_costs_one_capped_window_once(server):
    """The attacker cannot see the OACK (it goes to the victim) but knows the
    port: RRQ with the largest window, then ACK 0 blind."""
    req = rrq("big.bin", blksize=65464, windowsize=64)
    oack = server.send(req, SOURCE)
    assert packet.parse_oack(oack[0]) == {"blksize": "65464", "windowsize": "2"}  # 128 KiB
    window = server.send(packet.ack(0), SOURCE)
    assert [w[:4] for w in window] == [packet.data(1, b""), packet.data(2, b"")]
    assert sum(len(d) + V4 for d in window) <= 128 * 1024
    assert server.advance(120) == []  # not again at 1, 3, 7, ... s
    assert sum(len(d) + V4 for d in oack + window) <= 128 * 1024  # all it costs


def test_each_repeat_of_ack_0_gets_the_window_once_more(server):
    server.send(rrq("big.bin", blksize=1468, windowsize=4), SOURCE)
    first = server.send(packet.ack(0), SOURCE)
    assert len(first) == 4
    assert server.send(packet.ack(0), SOURCE) == first  # a receiver's timer: the window again
    assert server.advance(0.9) == []


def test_unverified_bytes_per_address_are_budgeted(server):
    """Sixteen forged sessions of one victim: at most the byte budget (and one
    window) reaches it, the rest is withheld and counted."""
    victim = 0
    for port in range(16):
        who = (SOURCE[0], 31000 + port)
        server.send(rrq("big.bin", blksize=65464, windowsize=2), who)
        victim += sum(len(d) for d in server.send(packet.ack(0), who))
    assert victim <= ServerConfig().unverified_bytes_per_second + 2 * 65468
    assert server.stats.totals["packets_withheld"] >= 10


def test_a_rate_below_one_window_still_lets_the_first_window_out():
    """--unverified-rate 64K with windows of 94 KB: each address gets its
    first window, not silence on every repeat."""
    server = MemoryServer(MemoryBackend(FILES), ServerConfig(unverified_bytes_per_second=64 * 1024))
    oack = server.send(rrq("big.bin", blksize=1468, windowsize=64), SOURCE)
    assert packet.parse_oack(oack[0])["windowsize"] == "64"
    window = server.send(packet.ack(0), SOURCE)
    assert [int.from_bytes(d[2:4], "big") for d in window] == list(range(1, 65))


def test_once_the_client_acknowledged_data_the_timer_retransmits_as_always(server):
    server.send(rrq("pxelinux.0"), SOURCE)
    server.send(packet.ack(1), SOURCE)
    sent = server.advance(2)
    assert [d[:4] for d, _ in sent] == [packet.data(2, b"")] * len(sent) and len(sent) >= 1


def test_junk_gets_a_rate_limited_error_per_address(server):
    first = server.send(b"\0\x09junk", SOURCE)
    assert first == [packet.error(packet.ERR_ILLEGAL, packet.MESSAGES[packet.ERR_ILLEGAL])]
    more = sum(len(server.send(b"\0\x09junk", SOURCE)) for _ in range(99))
    assert more == 9  # a burst of ten, then nothing
    server.advance(1.0)
    assert len(server.send(b"\0\x09junk", SOURCE)) == 1  # two a second
    assert len(server.send(b"\0\x09junk", ("203.0.113.5", 9))) == 1  # per address
    assert server.stats.totals["errors_suppressed"] == 90


def test_junk_from_forged_sources_is_logged_at_a_bounded_rate_in_all():
    """A flood with a new forged source per packet: one line per source would
    be one line per packet; the lines from all sources together are capped,
    and what was held back is counted in the next line."""
    from twisted.logger import formatEvent, globalLogPublisher
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        server = MemoryServer(MemoryBackend(FILES))
        for i in range(1000):
            server.send(b"\0\x09junk", ("198.51.%d.%d" % (i // 250, i % 250 + 1), 9))
        during = [formatEvent(e) for e in events]
        server.advance(1.0)
        server.send(b"\0\x09junk", ("203.0.113.9", 9))
        after = [formatEvent(e) for e in events][len(during):]
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert len([line for line in during if "198.51." in line]) == 100  # ten a second, ten times that at once
    assert any("900 lines about packets from other hosts not logged" in line for line in after)
    assert any("203.0.113.9" in line for line in after)


def test_a_boot_storm_never_meets_the_budgets(server):
    """Four hundred machines, each probing the size first (UEFI) and then
    fetching: nobody is dropped, nothing withheld."""
    for n in range(400):
        client = ("10.%d.%d.%d" % (n >> 16, (n >> 8) & 255, n & 255), 1024 + n)
        probe = server.send(rrq("pxelinux.0", blksize=1468, tsize=0), client)
        assert packet.opcode_of(probe[0]) == packet.OACK
        server.send(packet.error(packet.ERR_OPTIONS, "probe"), client)
        got = server.get("pxelinux.0", {"blksize": "1468", "windowsize": "4"}, client=(client[0], client[1] + 1))
        assert got.ok and got.data == PXELINUX
    totals = server.stats.totals
    assert (totals["requests_over_budget"], totals["packets_withheld"]) == (0, 0)


# -- lost first packets, recovered through the client's repeat (real UDP) ----------------

PORT_MODES = pytest.mark.parametrize("single_port", [False, True], ids=["session-ports", "single-port"])


@pytest.fixture
def served(serve, root):
    (root / "pxelinux.0").write_bytes(PXELINUX)

    def start(single_port):
        svc = serve(single_port=single_port, schedule=Schedule.parse("0.3,0.6,1.2,2.4"))
        return svc, ("127.0.0.1", svc.bound_port)
    return start


@PORT_MODES
@pytest_twisted.inlineCallbacks
def test_a_lost_oack_is_sent_again_for_the_repeated_request(served, single_port):
    svc, where = served(single_port)
    c = listen()
    req = rrq("pxelinux.0", blksize=1468)
    c.send(req, where)
    lost, tid = yield c.recv()
    assert packet.opcode_of(lost) == packet.OACK
    assert (yield c.quiet(0.5)) == []  # the server waits for the client
    c.send(req, where)                    # the client's timer: its request again
    oack, tid2 = yield c.recv()
    assert (oack, tid2) == (lost, tid)
    c.send(packet.ack(0), tid)
    first, _ = yield c.recv_from(tid)
    assert (yield rest(c, tid, first, 1468)) == PXELINUX
    yield c.close()


@PORT_MODES
@pytest.mark.parametrize("options", [{}, {"blksize": "1468"}, {"blksize": "1468", "windowsize": "4"}],
                         ids=["plain", "oack", "window"])
@pytest_twisted.inlineCallbacks
def test_a_lost_first_data_or_window_is_sent_again_for_the_repeat(served, single_port, options):
    """Plain: the client repeats its RRQ; after an OACK it repeats ACK 0 (an
    RFC 7440 receiver does so for a window that never came)."""
    svc, where = served(single_port)
    c = listen()
    req = packet.request(packet.RRQ, "pxelinux.0", "octet", options)
    c.send(req, where)
    reply, tid = yield c.recv()
    repeat = req
    if options:
        c.send(packet.ack(0), tid)
        repeat = packet.ack(0)
        reply, _ = yield c.recv_from(tid)
    window = int(options.get("windowsize", 1))
    lost = [reply]
    while len(lost) < window:
        lost.append((yield c.recv_from(tid))[0])
    assert [packet.opcode_of(d) for d in lost] == [packet.DATA] * window
    assert (yield c.quiet(0.5)) == []
    c.send(repeat, where if repeat is req else tid)
    first, _ = yield c.recv_from(tid)
    assert first == lost[0]
    assert (yield rest(c, tid, first, int(options.get("blksize", 512)), window)) == PXELINUX
    resent = [d for d, _ in c.received if d in lost]
    assert len(resent) == 2 * window  # the first window twice: lost, then for the repeat
    yield c.close()


# -- clean names -------------------------------------------------------------------------

@implementer(IBackend)
class Recording:
    """MemoryBackend that remembers what it was asked."""

    def __init__(self, files):
        self.inner = MemoryBackend(files)
        self.asked = []

    def get_reader(self, path, request):
        self.asked.append((path, request.path, request.raw_path))
        return self.inner.get_reader(path, request)


@pytest.mark.parametrize("raw,clean", [
    ("\\Boot\\BCD", "Boot/BCD"),          # Windows boot clients
    ("/a//b/./c", "a/b/c"),
    ("./pxelinux.0", "pxelinux.0"),
    ("/Boot\\BCD", "Boot/BCD"),
])
def test_names_reach_the_backend_clean_with_the_raw_one_beside(raw, clean):
    backend = Recording({"Boot/BCD": b"bcd", "a/b/c": b"c", "pxelinux.0": b"pxe"})
    server = MemoryServer(backend)
    got = server.get(raw)
    assert got.ok and backend.asked == [(clean, clean, raw)]


@pytest.mark.parametrize("raw,message", [
    ("a/../b", "Parent directories are not allowed"),
    ("..\\windows\\win.ini", "Parent directories are not allowed"),
    ("/../../etc/passwd", "Parent directories are not allowed"),
    ("a\x01b", "Control characters in the file name"),
    ("a\x7fb", "Control characters in the file name"),
    ("x" * 600, "File name too long"),
    ("d/" + "x" * 300, "File name too long"),
])
def test_bad_names_are_refused_before_any_backend(raw, message):
    backend = Recording({})
    server = MemoryServer(backend)
    replies = server.send(rrq(raw), SOURCE)
    assert replies == [packet.error(packet.ERR_ACCESS, message)]
    assert backend.asked == [] and server.records[-1].reason == "access_violation"


def test_a_nul_in_the_name_is_refused_too():
    """On the wire a NUL ends the name: what follows is read as the mode."""
    backend = Recording({"a": b"a"})
    replies = MemoryServer(backend).send(b"\0\1a\0b\0octet\0", SOURCE)
    assert replies == [packet.error(packet.ERR_ILLEGAL, "Unsupported transfer mode")]
    assert backend.asked == []
    with pytest.raises(errors.AccessViolation, match="Control"):
        normalize("a\0b")


def test_empty_and_root_names_are_not_found():
    for raw in ("/", "//./", "."):
        with pytest.raises(errors.FileNotFound):
            normalize(raw)


# -- access rules, in memory -------------------------------------------------------------

def test_denied_requests_get_no_reply_and_are_counted():
    access = AccessRules(allow=["10.0.0.0/8", "2001:db8::/32"], deny=["10.9.0.0/16", "2001:db8:9::/48"],
                         allow_write=["10.1.0.0/16"])
    server = MemoryServer(MemoryBackend({"f": b"f"}), access=access)
    for host in ("10.1.2.3", "10.200.0.1", "2001:db8::5"):
        assert server.get("f", client=(host, 2000)).ok
    for host in ("10.9.0.1", "192.0.2.1", "2001:db8:9::1", "2001:db9::1"):
        assert server.send(rrq("f"), (host, 2000)) == []
        assert server.send(b"\0\x09junk", (host, 2001)) == []  # nor junk: silence for the denied
    assert server.stats.totals["requests_denied"] == 4


@pytest.mark.parametrize("allow,deny,host,expect", [
    ([], [], "192.0.2.1", True),                           # no rules: everyone
    ([], ["10.0.0.0/8"], "192.0.2.1", True),               # only denials: the rest may
    (["10.0.0.0/8"], [], "192.0.2.1", False),              # any allow: the rest may not
    (["10.0.0.0/8"], ["10.1.0.0/16"], "10.1.2.3", False),  # the longer prefix wins
    (["10.1.2.3"], ["10.1.0.0/16"], "10.1.2.3", True),
    (["10.0.0.0/8"], ["10.0.0.0/8"], "10.1.2.3", False),   # a tie: deny
    (["::/0"], [], "10.1.2.3", False),                     # families never match each other
    (["fe80::/10"], [], "fe80::1%eth0", True),             # a scope is not part of the address
])
def test_precedence(allow, deny, host, expect):
    assert AccessRules(allow, deny).permits(host) is expect


def test_uploads_need_an_allow_write_rule_when_there_is_one():
    rules = AccessRules(deny=["10.9.0.0/16"], allow_write=["10.1.0.0/16"])
    assert rules.permits("10.2.0.1") and not rules.permits("10.2.0.1", write=True)
    assert rules.permits("10.1.0.1", write=True) and not rules.permits("10.9.0.1", write=True)
    assert AccessRules().permits("10.2.0.1", write=True)


def test_a_rule_file_is_read_at_start_and_on_reload(tmp_path):
    f = tmp_path / "access"
    f.write_text("# boot network\nallow 10.0.0.0/8\ndeny 10.9.0.0/16   # lab\n")
    rules = AccessRules(deny=["10.8.0.0/16"], source=str(f))
    assert rules.permits("192.0.2.1")  # not read before start
    rules.start()
    assert [rules.permits(h) for h in ("10.1.0.1", "10.9.0.1", "10.8.0.1", "192.0.2.1")] == [
        True, False, False, False]
    f.write_text("allow 192.0.2.0/24\n")
    assert rules.reload() == ["access rules from %s (1 rules)" % f]
    assert [rules.permits(h) for h in ("10.1.0.1", "10.8.0.1", "192.0.2.1")] == [False, False, True]
    f.write_text("allow 192.0.2.0/24\npermit 10.0.0.0/8\n")
    with pytest.raises(ValueError, match="line 2: expected allow, deny or allow-write"):
        rules.reload()
    assert rules.permits("192.0.2.1")  # the old rules stay


# -- over real UDP, between network namespaces -------------------------------------------

SERVER, SERVER6 = "10.78.0.1", "fd78::1"
PORT, SINGLE_PORT, GUARDED_PORT, WORKERS_PORT = 69, 1069, 2069, 3069
SOURCES = ["10.78.0.%d" % n for n in range(10, 16)]
SOURCES6 = ["fd78::%d" % n for n in range(10, 13)]
OUTSIDER = "10.78.0.200"
SCHEDULE = "0.25,0.5,1,2"  # the default's shape, shorter: 3.75 s of patience


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A server namespace running three servers (session ports, single port,
    access rules) and a client namespace with many addresses."""
    root = tmp_path_factory.mktemp("security-root")
    for name, data in FILES.items():
        (root / name).write_bytes(data)
    (root / "incoming").mkdir()
    rules = tmp_path_factory.mktemp("security-rules") / "access"
    rules.write_text("deny 10.78.0.13\n")
    servers = []
    with pair("x", (SERVER, SERVER6), SOURCES + SOURCES6 + [OUTSIDER]) as (server_ns, client_ns):
        try:
            def twistd(*args):
                argv = TWISTD + ["-n", "--pidfile=", "tftp", "--backend", "fs:%s" % root, "--stats-interval", "0",
                                 "--timeouts", SCHEDULE] + list(args)
                servers.append(processes.Server(argv, cwd=REPO, prefix=in_ns(server_ns)))
                return servers[-1]
            amp = twistd("--port", str(PORT), "--interface", SERVER)
            single = twistd("--port", str(SINGLE_PORT), "--interface", SERVER, "--single-port")
            guarded = twistd("--port", str(GUARDED_PORT), "--interface", "::", "--writable",
                             "--allow", "10.78.0.0/25", "--deny", "10.78.0.11", "--allow", "fd78::/64",
                             "--deny", "fd78::11", "--allow-write", "10.78.0.12", "--allow-write", "fd78::12",
                             "--access", str(rules), "--metrics", "tcp:9469:interface=127.0.0.1")
            counts = root.parent / "counts"
            twistd("--port", str(WORKERS_PORT), "--interface", SERVER, "--workers", "2",
                   "--max-sessions-per-client", "1",
                   "--backend", "python:%s:counting:%s" % (os.path.join(HERE, "concurrency.py"), counts))
            for server in servers:
                server.ready()
            servers[-1].ready(count=2)
            yield dict(root=root, rules=rules, client=client_ns, server=server_ns, amp=amp, single=single,
                       guarded=guarded, counts=counts)
        finally:
            for server in servers:
                server.stop()


def reflect(net, port, *cases):
    argv = in_ns(net["client"], sys.executable, os.path.join(HERE, "reflector.py"), SERVER, port, 5.0,
                 *("%s@%s" % (case, source) for case, source in zip(cases, SOURCES, strict=False)))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {r["case"]: r for r in map(json.loads, done.stdout.splitlines())}


def test_amplification_over_the_wire_with_session_ports(net):
    got = reflect(net, PORT, "plain", "options", "burst", "spoofed-ack", "junk")
    assert [op for op, _, _ in got["plain"]["replies"]] == [packet.DATA] and got["plain"]["ratio"] <= 12
    assert [op for op, _, _ in got["options"]["replies"]] == [packet.OACK] and got["options"]["ratio"] <= 3
    assert len(got["burst"]["replies"]) == 16 and got["burst"]["ratio"] <= 12
    # here the blind ACK 0 misses the session's port: an ERROR from the listening port
    spoofed = got["spoofed-ack"]["replies"]
    assert [op for op, _, _ in spoofed] == [packet.OACK, packet.ERROR] and spoofed[1][2] == PORT
    junk = got["junk"]["replies"]
    assert 1 <= len(junk) <= 10 + 2 * 5 and {op for op, _, _ in junk} == {packet.ERROR}


def test_amplification_over_the_wire_in_single_port_mode(net):
    got = reflect(net, SINGLE_PORT, "plain", "options", "spoofed-ack")
    assert len(got["plain"]["replies"]) == 1 and got["plain"]["ratio"] <= 12
    assert len(got["options"]["replies"]) == 1 and got["options"]["ratio"] <= 3
    spoofed = got["spoofed-ack"]
    assert [op for op, _, _ in spoofed["replies"]] == [packet.OACK, packet.DATA, packet.DATA]
    assert spoofed["received"] <= 128 * 1024  # one capped window, once: not 4 MB six times


def attempts(net, *specs, port=GUARDED_PORT, expect=PXELINUX):
    argv = in_ns(net["client"], sys.executable, os.path.join(HERE, "netpeer.py"), "try",
                 SERVER6 if all(":" in s.split(",")[0] for s in specs) else SERVER, port, *specs)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for spec, result in zip(specs, results, strict=True):
        if result[0] == "ok" and ",read," in spec:
            assert result[1] == hashlib.sha256(expect).hexdigest()
    return [r[0] for r in results]


def denied(net):
    page = subprocess.run(in_ns(net["server"], "curl", "-s", "http://127.0.0.1:9469/metrics"),
                          capture_output=True, text=True, timeout=20).stdout
    return float(next(line.split()[1] for line in page.splitlines()
                      if line.startswith("tftp_requests_denied_total")))


def test_access_rules_over_ipv4_and_ipv6_with_uploads_and_a_reload(net):
    base = denied(net)
    v4 = attempts(net, "10.78.0.10,read,pxelinux.0", "10.78.0.11,read,pxelinux.0", "10.78.0.13,read,pxelinux.0",
                  "%s,read,pxelinux.0" % OUTSIDER, "10.78.0.10,write,incoming/a", "10.78.0.12,write,incoming/b")
    assert v4 == ["ok", "silent", "silent", "silent", "silent", "ok"]
    v6 = attempts(net, "fd78::10,read,pxelinux.0", "fd78::11,read,pxelinux.0", "fd78::10,write,incoming/c",
                  "fd78::12,write,incoming/d")
    assert v6 == ["ok", "silent", "silent", "ok"]
    assert sorted(os.listdir(net["root"] / "incoming")) == ["b", "d"]
    assert (net["root"] / "incoming" / "b").read_bytes() == (b"incoming/b" * 200)[:2000]
    assert denied(net) - base == 6
    assert net["guarded"].log.count("request denied by the access rules") >= 1
    net["rules"].write_text("allow %s\ndeny 10.78.0.10\n" % OUTSIDER)
    net["guarded"].signal(signal.SIGHUP)
    net["guarded"].wait_for("access rules from %s (2 rules)" % net["rules"])
    assert attempts(net, "%s,read,pxelinux.0" % OUTSIDER, "10.78.0.10,read,pxelinux.0",
                    "10.78.0.13,read,pxelinux.0") == ["ok", "silent", "ok"]


def test_limits_per_address_hold_across_workers(net):
    """Each client address meets one process, so a per-client limit holds
    for the whole server: with --max-sessions-per-client 1 and two workers,
    five concurrent reads from one address are all served, one at a time."""
    got = attempts(net, *["10.78.0.14,read,64.bin"] * 5, port=WORKERS_PORT, expect=concurrency.pattern(64))
    assert got == ["ok"] * 5
    assert concurrency.read_counts(net["counts"]) == (0, 1)
