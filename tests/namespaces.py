"""Two network namespaces joined by a veth pair: a server's host and a
client's, with as many addresses on each end as a test needs.  Traffic
between them is real IP from real (non-loopback) addresses, so nothing a
server grants loopback applies; and port 69 is free there."""
import contextlib
import os
import shutil
import subprocess

import pytest


def ip(*args):
    return subprocess.run(("ip",) + args, capture_output=True, text=True, timeout=10)


def must(*args):
    res = ip(*args)
    if res.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), res.stderr.strip()))


def in_ns(ns, *argv):
    """``argv`` run inside the namespace ``ns``."""
    return ("ip", "netns", "exec", ns) + tuple(str(a) for a in argv)


@contextlib.contextmanager
def pair(tag, server_addresses, client_addresses):
    """``(server_ns, client_ns)``, joined by veth0 (server) and veth1 (client),
    each end holding its addresses (IPv4 as /24, IPv6 as /64); removed on
    exit, whatever happened.  Skips the test where namespaces cannot be made."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2's ip is not installed")
    server_ns, client_ns = "txfbtftp-s%s-%d" % (tag, os.getpid()), "txfbtftp-c%s-%d" % (tag, os.getpid())
    res = ip("netns", "add", server_ns)
    if res.returncode != 0:
        pytest.skip("cannot create a network namespace (ip netns add: %s)" % res.stderr.strip())
    try:
        must("netns", "add", client_ns)
        must("-n", server_ns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", client_ns)
        for ns, dev, addrs in ((server_ns, "veth0", server_addresses), (client_ns, "veth1", client_addresses)):
            must("-n", ns, "link", "set", "lo", "up")
            for addr in addrs:
                if ":" in addr:
                    must("-n", ns, "addr", "add", addr + "/64", "dev", dev, "nodad")
                else:
                    must("-n", ns, "addr", "add", addr + "/24", "dev", dev)
            must("-n", ns, "link", "set", dev, "up")
        yield server_ns, client_ns
    finally:
        for ns in (client_ns, server_ns):
            ip("netns", "del", ns)
