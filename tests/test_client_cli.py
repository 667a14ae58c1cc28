"""``txfbtftp get``, ``put`` and ``check`` as a user runs them: a subprocess,
its exit status, its output.  The server is txfbtftp in this process (the
command runs in a thread meanwhile) or a socket that never answers."""
import fcntl
import hashlib
import json
import os
import pty
import socket
import stat
import struct
import subprocess
import sys
import termios

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from txfbtftp import FilesystemBackend

DATA = os.urandom(2 * 1024 * 1024 + 5)


def txfbtftp(*args, stderr=subprocess.PIPE, timeout=60):
    """Run the command in a thread: the server lives in this process's reactor."""
    argv = [sys.executable, "-m", "txfbtftp", *map(str, args)]
    return deferToThread(subprocess.run, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                         timeout=timeout)


@pytest.fixture
def srv(serve, root):
    (root / "big.bin").write_bytes(DATA)
    (root / "taken.bin").write_bytes(b"old")
    svc = serve(backend=FilesystemBackend(str(root), writable=True), dally=0.05)
    return "tftp://127.0.0.1:%d/" % svc.bound_port


@pytest.fixture
def silent():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield "tftp://127.0.0.1:%d/" % s.getsockname()[1]
    s.close()


@pytest_twisted.ensureDeferred
async def test_get_to_a_file_and_to_stdout(srv, tmp_path):
    out = tmp_path / "big.out"
    p = await txfbtftp("get", srv + "big.bin", "-o", out, "-w", "8", "-v")
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == DATA and p.stdout == b""
    assert b"txfbtftp get: %d bytes in" % len(DATA) in p.stderr and b"windowsize=8" in p.stderr
    p = await txfbtftp("get", srv + "hello.txt")
    assert (p.returncode, p.stdout, p.stderr) == (0, b"Hello from txfbtftp\n", b"")


@pytest_twisted.ensureDeferred
async def test_get_writes_through_a_symlink_and_into_a_fifo_or_a_device(srv, tmp_path):
    """Only a file is replaced (by the complete download, renamed over it):
    a symlink's target is, the link stays; a FIFO or a device is written to."""
    real, link = tmp_path / "real", tmp_path / "link"
    real.write_bytes(b"old")
    os.chmod(real, 0o640)
    link.symlink_to(real)
    p = await txfbtftp("get", srv + "big.bin", "-o", link, "-q")
    assert p.returncode == 0, p.stderr
    assert link.is_symlink() and real.read_bytes() == DATA and stat.S_IMODE(real.stat().st_mode) == 0o640
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    read = deferToThread(fifo.read_bytes)
    p = await txfbtftp("get", srv + "big.bin", "-o", fifo, "-q")
    assert p.returncode == 0 and (await read) == DATA and stat.S_ISFIFO(fifo.stat().st_mode)
    if os.geteuid() == 0:
        null = tmp_path / "null"
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        p = await txfbtftp("get", srv + "big.bin", "-o", null, "-q")
        assert p.returncode == 0 and stat.S_ISCHR(null.stat().st_mode)
    assert not [x for x in tmp_path.iterdir() if x.name.endswith(".part")]  # no temporary file left


@pytest_twisted.ensureDeferred
async def test_put_then_get_back_in_netascii(srv, tmp_path):
    src = tmp_path / "notes.txt"
    src.write_bytes(b"one\ntwo\r\nthree\n")
    p = await txfbtftp("put", src, srv, "--mode", "netascii", "-b", "512")  # a URL ending in / takes the name
    assert p.returncode == 0, p.stderr
    p = await txfbtftp("get", srv + "notes.txt;mode=netascii", "-o", tmp_path / "back.txt")
    assert p.returncode == 0 and (tmp_path / "back.txt").read_bytes() == b"one\ntwo\r\nthree\n"


@pytest.mark.parametrize("args, status, message", [
    (("get", "{srv}missing.bin", "-o", "{tmp}/x"), 68, b"File not found (ERROR 1)"),
    (("put", "{tmp}/src", "{srv}taken.bin"), 73, b"(ERROR 6)"),
    (("put", "{tmp}/src", "{srv}../outside"), 69, b"(ERROR 2)"),
    (("put", "{tmp}/nothere", "{srv}y"), 26, b"No such file"),
    (("get", "{srv}big.bin", "-o", "{tmp}/no/dir/x"), 23, b"No such file"),
    (("get", "http://example.invalid/x"), 3, b"not a tftp:// URL"),
    (("get", "{srv}x", "-b", "7"), 2, b"blksize must be within"),
])
@pytest_twisted.ensureDeferred
async def test_exit_codes_are_curls(srv, tmp_path, args, status, message):
    (tmp_path / "src").write_bytes(b"data")
    argv = [a.format(srv=srv, tmp=tmp_path) for a in args]
    p = await txfbtftp(*argv)
    assert p.returncode == status and message in p.stderr, p.stderr
    assert not list(tmp_path.glob(".*.part"))  # a failed download leaves nothing behind


@pytest_twisted.ensureDeferred
async def test_a_silent_server_is_a_timeout(silent, tmp_path):
    p = await txfbtftp("get", silent + "x", "-o", tmp_path / "x", "--schedule", "0.1,0.1,0.1")
    assert p.returncode == 28 and b"timed out" in p.stderr
    assert not (tmp_path / "x").exists()
    p = await txfbtftp("check", silent + "x", "--schedule", "0.1,0.1")
    assert p.returncode == 2 and p.stdout.startswith(b"TFTP CRITICAL - x: timed out")


@pytest_twisted.ensureDeferred
async def test_check_ok_with_perfdata(srv):
    digest = hashlib.sha256(DATA).hexdigest()
    p = await txfbtftp("check", srv + "big.bin", "--sha256", digest, "--size", len(DATA), "-w", "4",
                       "--warn", "30", "--crit", "60")
    assert p.returncode == 0, p.stdout
    line = p.stdout.decode()
    assert line.count("\n") == 1 and line.startswith("TFTP OK - big.bin: %d bytes in " % len(DATA))
    text, perf = line.strip().split(" | ")
    assert "first packet" in text and "retransmits" in text and "windowsize=4" in text
    labels = [item.split("=")[0] for item in perf.split()]
    assert labels == ["time", "latency", "size", "throughput", "retransmits"]
    assert perf.split()[0].endswith("s;30;60;0") and "size=%dB;;;0" % len(DATA) in perf


@pytest.mark.parametrize("args, status, state", [
    (("--warn", "0"), 1, "WARNING"),
    (("--warn", "0", "--crit", "0"), 2, "CRITICAL"),
    (("--size", "3"), 2, "CRITICAL"),
    (("--sha256", "0" * 64), 2, "CRITICAL"),
    (("--sha256", "xyz"), 3, "UNKNOWN"),
    (("--warn", "-1"), 3, "UNKNOWN"),
    (("--bogus",), 3, "UNKNOWN"),
])
@pytest_twisted.ensureDeferred
async def test_check_states(srv, args, status, state):
    p = await txfbtftp("check", srv + "big.bin", *args)
    assert p.returncode == status and p.stdout.startswith(b"TFTP %s - " % state.encode()), p.stdout


@pytest_twisted.ensureDeferred
async def test_check_missing_file_and_bad_url(srv):
    p = await txfbtftp("check", srv + "nope")
    assert p.returncode == 2 and p.stdout == b"TFTP CRITICAL - nope: File not found (ERROR 1)\n"
    p = await txfbtftp("check", "tftp://")
    assert p.returncode == 3 and p.stdout.startswith(b"TFTP UNKNOWN - no host")


@pytest_twisted.ensureDeferred
async def test_check_says_what_failed_where_on_one_line(silent):
    """The server's words cannot break the plugin's line or start its
    performance data; a failure on this host is UNKNOWN, not CRITICAL."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))

    def answer():
        _, client = server.recvfrom(2048)
        server.sendto(b"\0\5\0\0bad | thing\nsecond line\0", client)

    answered = deferToThread(answer)
    p = await txfbtftp("check", "tftp://127.0.0.1:%d/f" % server.getsockname()[1])
    await answered
    server.close()
    assert p.returncode == 2 and p.stdout == b"TFTP CRITICAL - f: bad / thing second line (ERROR 0)\n", p.stdout
    p = await txfbtftp("check", silent + "f", "--bind", "192.0.2.99")
    assert p.returncode == 3 and p.stdout.startswith(b"TFTP UNKNOWN - f: "), p.stdout
    p = await txfbtftp("check", silent + "f", "--schedule", "0.1,0.1")
    assert p.returncode == 2 and p.stdout.startswith(b"TFTP CRITICAL - f: "), p.stdout


@pytest_twisted.ensureDeferred
async def test_check_json(srv):
    p = await txfbtftp("check", srv + "big.bin", "--json", "--size", len(DATA))
    out = json.loads(p.stdout)
    assert p.returncode == 0 and out["state"] == "OK" and out["exit"] == 0
    assert out["size"] == len(DATA) and out["sha256"] == hashlib.sha256(DATA).hexdigest()
    assert out["record"]["outcome"] == "ok" and out["record"]["bytes_transferred"] == len(DATA)
    assert out["latency"] == out["record"]["time_to_first_packet"] and out["throughput"] > 0
    p = await txfbtftp("check", srv + "nope", "--json")
    out = json.loads(p.stdout)
    assert p.returncode == 2 and out["state"] == "CRITICAL" and out["code"] == 1 and out["record"] is None


@pytest_twisted.ensureDeferred
async def test_progress_bar_on_a_terminal(srv, tmp_path):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        p = await txfbtftp("get", srv + "big.bin", "-o", tmp_path / "big.out", stderr=follower)
        os.close(follower)
        follower = None
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if follower is not None:
            os.close(follower)
        os.close(leader)
    assert p.returncode == 0 and (tmp_path / "big.out").read_bytes() == DATA
    assert b"big.bin: 100%" in drawn and b"2.00M/2.00M" in drawn  # tqdm's bar, drawn on the terminal
    p = await txfbtftp("get", srv + "big.bin", "-o", tmp_path / "again.out")
    assert p.returncode == 0 and p.stderr == b""  # not a terminal: no bar
