"""A multi-homed server for real: two network namespaces joined by a veth
pair.  The server's end holds two IPv4 and two IPv6 addresses, the client's
end routes to all four.  ``twistd tftp`` listens on ``::`` (once with session
ports, once in single-port mode); a bare-socket client (tests/netpeer.py)
records where every reply came from.

The kernel would pick the first address of the subnet as the source of a
reply from an unbound socket, so a server that does not bind (or tag) its
replies answers the second address from the first one, and a PXE ROM drops
the answer.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from . import clients

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TAG = "%d" % os.getpid()
SERVER_NS, CLIENT_NS = "txfbtftp-s%s" % TAG, "txfbtftp-c%s" % TAG
SERVER_V4, SERVER_V6 = ("10.77.0.1", "10.77.0.2"), ("fd77::1", "fd77::2")
CLIENT_V4, CLIENT_V6 = "10.77.0.10", "fd77::10"
PORT, SINGLE_PORT = 69, 1069


def ip(*args):
    return subprocess.run(("ip",) + args, capture_output=True, text=True, timeout=10)


def must(*args):
    res = ip(*args)
    if res.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), res.stderr.strip()))


def in_ns(ns, *argv):
    return ("ip", "netns", "exec", ns) + tuple(str(a) for a in argv)


class Server:
    """``twistd tftp`` inside the server namespace; its log lines are kept."""

    def __init__(self, *args):
        argv = in_ns(SERVER_NS, os.path.join(os.path.dirname(sys.executable), "twistd"), "-n", "--pidfile=",
                     "tftp", *args)
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True)
        self.lines = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if "TFTP server listening on" in line:
                self.ready.set()
        self.ready.set()

    def wait(self):
        if not self.ready.wait(20) or self.proc.poll() is not None:
            raise RuntimeError("server did not start:\n" + "".join(self.lines))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """The two namespaces, the veth pair between them and both servers; all
    of it removed afterwards, whatever happened."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2's ip is not installed")
    res = ip("netns", "add", SERVER_NS)
    if res.returncode != 0:
        pytest.skip("cannot create a network namespace (ip netns add: %s)" % res.stderr.strip())
    servers = []
    try:
        must("netns", "add", CLIENT_NS)
        must("-n", SERVER_NS, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", CLIENT_NS)
        ends = ((SERVER_NS, "veth0", SERVER_V4 + SERVER_V6), (CLIENT_NS, "veth1", (CLIENT_V4, CLIENT_V6)))
        for ns, dev, addrs in ends:
            must("-n", ns, "link", "set", "lo", "up")
            for addr in addrs:
                if ":" in addr:
                    must("-n", ns, "addr", "add", addr + "/64", "dev", dev, "nodad")
                else:
                    must("-n", ns, "addr", "add", addr + "/24", "dev", dev)
            must("-n", ns, "link", "set", dev, "up")
        root = tmp_path_factory.mktemp("netns-root")
        (root / "small.bin").write_bytes(os.urandom(5000))
        backends = ("--backend", "python:%s:whoami" % os.path.join(HERE, "netpeer.py"), "--backend", "fs:%s" % root)
        common = backends + ("--interface", "::", "--stats-interval", "0")
        servers.append(Server(*common + ("--port", str(PORT))))
        servers.append(Server(*common + ("--port", str(SINGLE_PORT), "--single-port")))
        for server in servers:
            server.wait()
        yield {"root": root, "sessions": servers[0], "single": servers[1]}
    finally:
        for server in servers:
            server.stop()
        for ns in (CLIENT_NS, SERVER_NS):
            ip("netns", "del", ns)


def probe(host, port):
    res = subprocess.run(in_ns(CLIENT_NS, sys.executable, os.path.join(HERE, "netpeer.py"), host, port),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize("single_port", [False, True], ids=["session-ports", "single-port"])
@pytest.mark.parametrize("dest", SERVER_V4 + SERVER_V6)
def test_every_reply_leaves_from_the_address_the_request_was_sent_to(net, dest, single_port):
    port = SINGLE_PORT if single_port else PORT
    out = probe(dest, port)
    me = CLIENT_V6 if ":" in dest else CLIENT_V4
    assert out["whoami"] == {"client": [me, out["me"][1]], "local": [dest, port]}
    assert out["sha256"] == hashlib.sha256((net["root"] / "small.bin").read_bytes()).hexdigest()
    replies = out["replies"]
    assert {host for _, host, _, _, _ in replies} == {dest}
    kinds = {}
    for what, _, src_port, opcode, code in replies:
        kinds.setdefault(what, (src_port, opcode, code))
    assert kinds["first"][1] == 6 and kinds["data"][1] == 3  # OACK, DATA
    assert kinds["not-found"][1:] == (5, 1)
    assert kinds["stray-ack"] == kinds["malformed"] == (port, 5, 4)  # from the listening port
    if single_port:
        assert {src_port for _, _, src_port, _, _ in replies} == {port}
    else:
        assert kinds["first"][0] != port and kinds["not-found"][0] != port


@pytest.mark.parametrize("dest", (SERVER_V4[1], SERVER_V6[1]))
def test_curl_from_the_other_namespace(net, tmp_path, dest):
    """A stock client, across the veth, at the second address of each family."""
    if not clients.available("curl"):
        pytest.skip("curl with tftp is not installed")
    out = tmp_path / "out.bin"
    argv = clients.build_command("curl", "download", dest, PORT, "small.bin", out, timeout=15)
    res = subprocess.run(in_ns(CLIENT_NS, *argv), capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == (net["root"] / "small.bin").read_bytes()
    time.sleep(0.1)
    peer = "[%s]:" % CLIENT_V6 if ":" in dest else "%s:" % CLIENT_V4
    log = "".join(net["sessions"].lines)
    assert peer in log and "RRQ 'small.bin'" in log
    assert "::ffff:" not in log  # IPv4 clients of the dual-stack listener, in natural form
