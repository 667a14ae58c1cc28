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
import subprocess
import sys
import time

import pytest

from . import clients, processes
from .namespaces import in_ns, pair
from .processes import TWISTD

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SERVER_V4, SERVER_V6 = ("10.77.0.1", "10.77.0.2"), ("fd77::1", "fd77::2")
CLIENT_V4, CLIENT_V6 = "10.77.0.10", "fd77::10"
PORT, SINGLE_PORT = 69, 1069


def twistd(ns, *args):
    """``twistd tftp`` inside ``ns``, in the foreground, its output kept."""
    return processes.Server(TWISTD + ["-n", "--pidfile=", "tftp"] + list(args), cwd=REPO, prefix=in_ns(ns))


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """The two namespaces, the veth pair between them and both servers; all
    of it removed afterwards, whatever happened."""
    servers = []
    with pair("n", SERVER_V4 + SERVER_V6, (CLIENT_V4, CLIENT_V6)) as (server_ns, client_ns):
        try:
            root = tmp_path_factory.mktemp("netns-root")
            (root / "small.bin").write_bytes(os.urandom(5000))
            backends = ("--backend", "python:%s:whoami" % os.path.join(HERE, "netpeer.py"),
                        "--backend", "fs:%s" % root)
            common = backends + ("--interface", "::", "--stats-interval", "0")
            servers.append(twistd(server_ns, *common + ("--port", str(PORT))))
            servers.append(twistd(server_ns, *common + ("--port", str(SINGLE_PORT), "--single-port")))
            for server in servers:
                server.ready()
            yield {"root": root, "sessions": servers[0], "single": servers[1], "client": client_ns}
        finally:
            for server in servers:
                server.stop()


def probe(net, host, port):
    res = subprocess.run(in_ns(net["client"], sys.executable, os.path.join(HERE, "netpeer.py"), host, port),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.parametrize("single_port", [False, True], ids=["session-ports", "single-port"])
@pytest.mark.parametrize("dest", SERVER_V4 + SERVER_V6)
def test_every_reply_leaves_from_the_address_the_request_was_sent_to(net, dest, single_port):
    port = SINGLE_PORT if single_port else PORT
    out = probe(net, dest, port)
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
    res = subprocess.run(in_ns(net["client"], *argv), capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == (net["root"] / "small.bin").read_bytes()
    time.sleep(0.1)
    peer = "[%s]:" % CLIENT_V6 if ":" in dest else "%s:" % CLIENT_V4
    log = net["sessions"].log
    assert peer in log and "RRQ 'small.bin'" in log
    assert "::ffff:" not in log  # IPv4 clients of the dual-stack listener, in natural form
