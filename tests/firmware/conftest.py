"""Fixtures of the firmware boots: what the host must have, the Debian files
fetched once per session, and a :class:`~tests.firmware.lab.Lab` per boot,
always torn down.

Without ``TXFBTFTP_REQUIRE_CLIENTS=1`` a missing package, QEMU, or the
right to make network namespaces skips these tests with the reason; with it
(as in CI) they fail instead.
"""
import os
import subprocess
import sys

import pytest

from . import debian
from .lab import Lab, LabError

STRICT = os.environ.get("TXFBTFTP_REQUIRE_CLIENTS") == "1"
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

#: Filled while the tests run, printed at the end: Debian versions of what
#: was booted, and how long each boot took.
VERSIONS = {}
TIMINGS = []


def unavailable(reason):
    if STRICT:
        pytest.fail("firmware test cannot run (TXFBTFTP_REQUIRE_CLIENTS=1): %s" % reason, pytrace=False)
    pytest.skip(reason)


def need(*packages):
    """Fail or skip unless the Debian ``packages`` are installed; note their
    versions for the summary."""
    try:
        debian.require(*packages)
    except debian.Unavailable as exc:
        unavailable(str(exc))
    for pkg in packages:
        VERSIONS.setdefault(pkg, debian.installed_version(pkg) or "?")


@pytest.fixture(scope="session")
def host():
    """Root, /dev/net/tun, network namespaces, QEMU, dnsmasq and the twistd
    of this Python."""
    if os.geteuid() != 0:
        unavailable("needs root (network namespaces, tap devices)")
    need("iproute2", "qemu-system-x86", "dnsmasq-base")
    if not os.path.exists("/dev/net/tun"):
        unavailable("/dev/net/tun is missing")
    if not os.path.exists(TWISTD):
        unavailable("no twistd beside %s (make venv)" % sys.executable)
    probe = "txfbtftp-fwprobe%d" % os.getpid()
    res = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if res.returncode != 0:
        unavailable("cannot create a network namespace: %s" % res.stderr.strip())
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return True


def _fetched(fetch):
    """The path ``fetch`` brings into the cache, its package version noted."""
    try:
        path, name, version = fetch()
    except debian.Unavailable as exc:
        unavailable(str(exc))
    VERSIONS[name] = version
    return path


@pytest.fixture(scope="session")
def kernel(host):
    """Path of a Debian kernel image (fetched into the cache)."""
    return _fetched(debian.kernel)


@pytest.fixture(scope="session")
def busybox(host):
    """Path of Debian's static busybox (fetched into the cache)."""
    return _fetched(debian.busybox)


@pytest.fixture
def lab(host, tmp_path, request):
    """``lab(multihomed)``: a fresh :class:`Lab`, closed after the test."""
    made = []

    def make(multihomed):
        work = tmp_path / ("lab%d" % len(made))
        work.mkdir()
        new = Lab(str(work), multihomed, TWISTD)
        made.append(new)
        try:
            new.up()
        except LabError as exc:
            pytest.fail("cannot set up the lab: %s" % exc, pytrace=False)
        return new

    yield make
    for one in made:
        if one.console is not None:
            TIMINGS.append((request.node.nodeid, one.console.elapsed, one.milestones))
        one.close()


def pytest_terminal_summary(terminalreporter):
    if not (VERSIONS or TIMINGS):
        return
    tr = terminalreporter
    tr.section("firmware boots")
    for pkg in sorted(VERSIONS):
        tr.write_line("%-34s %s" % (pkg, VERSIONS[pkg]))
    total = 0.0
    for nodeid, seconds, milestones in TIMINGS:
        total += seconds
        steps = ", ".join("%s %.1fs" % m for m in milestones)
        tr.write_line("%6.1fs  %s%s" % (seconds, nodeid.split("::")[-1], "  (" + steps + ")" if steps else ""))
    if TIMINGS:
        tr.write_line("%6.1fs  in QEMU, %d boots" % (total, len(TIMINGS)))
