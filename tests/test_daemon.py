"""The daemon as an operator runs it, for real (CI runs as root): start-up
errors, privileges, chroot, socket activation, signals, crashes, one server
per port.  Port 69 is used inside a network namespace of the test's own."""
import grp
import threading
import os
import pwd
import signal
import shutil
import socket
import subprocess
import sys
import time

import pytest

import txfbtftp

from .processes import TWISTD, TXFBTFTP, Client, Server, ServerError, free_port, request

ROOT_USER = os.geteuid() == 0
as_root = pytest.mark.skipif(not ROOT_USER, reason="needs root (privilege drops, chroot, namespaces)")
NOBODY = "nobody"
NOGROUP = grp.getgrgid(pwd.getpwnam(NOBODY).pw_gid).gr_name if ROOT_USER else "nogroup"


def serve(servers, *args, how="serve", twistd=(), prefix=(), cwd=None):
    """``txfbtftp serve ARGS`` or ``twistd -n TWISTD-ARGS tftp ARGS``."""
    if how == "serve":
        argv = TXFBTFTP + ["serve"] + list(args)
    else:
        argv = TWISTD + ["-n", "--pidfile="] + list(twistd) + ["tftp"] + list(args)
    s = Server(argv, prefix=prefix, cwd=cwd)
    servers.append(s)
    return s


@pytest.fixture
def tree(tmp_path):
    """A root, readable by anyone (so by the user a server drops to)."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "hello.txt").write_bytes(b"Hello from txfbtftp\n")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    for d in [tmp_path] + list(tmp_path.parents):
        if str(d) in ("/", "/tmp"):
            break
        os.chmod(d, os.stat(d).st_mode | 0o055)
    return root


def run(argv, timeout=30, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


# -- start-up errors: one line, an exit status, no traceback -------------------------------------

def bad_starts(tree):
    missing = str(tree / "missing")
    return [
        (["--backend", "fs:"], 64, "fs: needs a directory"),
        (["--backend", "fs:" + missing], 66, "not a directory"),
        (["--backend", "fs:%s" % tree, "--timeouts", "1x2000"], 64, "bad timeout schedule '1x2000'"),
        (["--backend", "fs:%s" % tree, "--interface", "eth0"], 64, "--interface takes an IP address"),
        (["--backend", "fs:%s" % tree, "--interface", "192.0.2.99", "--port", "0"], 71, "no such address"),
        (["--backend", "fs:%s" % tree, "--remap", missing], 66, "cannot read remap rules"),
        (["--backend", "fs:%s" % tree, "--port", "70000"], 64, "--port must be within"),
        (["--backend", "fs:%s" % tree, "--shutdown-grace", "-1"], 64, "--shutdown-grace"),
        (["--backend", "fs:%s" % tree, "--systemd"], 64, "--systemd: no socket was passed"),
    ]


@pytest.mark.parametrize("how", ["serve", "twistd"])
def test_bad_starts_are_one_line_and_an_exit_status(tree, how):
    for args, code, words in bad_starts(tree):
        if how == "serve":
            argv = TXFBTFTP + ["serve"] + args
        else:
            argv = TWISTD + ["-n", "--pidfile=", "tftp"] + args
        done = run(argv)
        errors = [line for line in done.stderr.splitlines() if line.startswith("txfbtftp: ")]
        assert (done.returncode, len(errors)) == (code, 1), (args, done.returncode, done.stderr, done.stdout)
        assert words in errors[0], (args, errors)
        assert "Traceback" not in done.stdout + done.stderr, (args, done.stdout + done.stderr)


def test_a_port_in_use_is_one_line_and_71(tree):
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        done = run(TXFBTFTP + ["serve", "--backend", "fs:%s" % tree, "--interface", "127.0.0.1", "--port",
                               str(port)])
    finally:
        busy.close()
    assert done.returncode == 71 and "Traceback" not in done.stdout + done.stderr
    assert done.stderr.strip() == "txfbtftp: cannot listen on 127.0.0.1:%d: address already in use" % port


@as_root
@pytest.mark.parametrize("case", ["unreadable root", "unwritable cache", "unwritable upload root"])
def test_what_the_serving_user_cannot_use_is_found_at_start(tree, tmp_path, case):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)  # root's alone
    args = {"unreadable root": ["--backend", "fs:%s" % locked],
            "unwritable cache": ["--backend", "http:http://127.0.0.1:9/", "--cache-dir", str(locked / "cache")],
            "unwritable upload root": ["--backend", "fs:%s" % tree, "--writable"]}[case]
    code = {"unreadable root": 66, "unwritable cache": 73, "unwritable upload root": 73}[case]
    done = run(TWISTD + ["-n", "--pidfile=", "-u", NOBODY, "-g", NOGROUP, "tftp", "--port", str(free_port()),
                         "--interface", "127.0.0.1"] + args)
    errors = [line for line in done.stderr.splitlines() if line.startswith("txfbtftp: ")]
    assert (done.returncode, len(errors)) == (code, 1), done.stdout + done.stderr
    assert "uid %d" % pwd.getpwnam(NOBODY).pw_uid in errors[0] or "cache" in errors[0], errors
    assert "Traceback" not in done.stdout + done.stderr


def test_a_daemon_that_cannot_start_says_why_and_leaves_no_pid_file(tree, tmp_path):
    """Without -n, twistd waits for its daemon to start: it hears why not."""
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    pidfile, logfile = tmp_path / "twistd.pid", tmp_path / "twistd.log"
    try:
        done = run(TWISTD + ["--pidfile=%s" % pidfile, "--logfile=%s" % logfile, "tftp", "--backend",
                             "fs:%s" % tree, "--port", str(port), "--interface", "127.0.0.1"], timeout=20)
    finally:
        busy.close()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot listen on 127.0.0.1:%d: address already in use" % port in done.stderr
    assert not pidfile.exists()
    assert "Traceback" not in done.stderr + logfile.read_text()


def test_the_version_is_txfbtftps():
    expected = "txfbtftp %s" % txfbtftp.__version__
    for argv in (TXFBTFTP + ["--version"], [sys.executable, "-m", "txfbtftp", "--version"],
                 TWISTD + ["tftp", "--version"]):
        done = run(argv)
        assert (done.returncode, done.stdout.strip()) == (0, expected), (argv, done.stdout, done.stderr)


# -- privileges: bind port 69 as root, serve as nobody ----------------------------------------------

@pytest.fixture
def netns():
    """A network namespace of the test's own (loopback up): port 69 is free there."""
    if not ROOT_USER or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2")
    name = "txfbtftp-d%d-%d" % (os.getpid(), int(time.monotonic() * 1000) % 100000)
    assert run(["ip", "netns", "add", name]).returncode == 0
    run(["ip", "-n", name, "link", "set", "lo", "up"])
    yield ["ip", "netns", "exec", name]
    run(["ip", "netns", "del", name])


def uids_of(pid):
    """The real uid of ``pid`` and of every process below it."""
    out = run(["ps", "-o", "pid=,ppid=,uid=", "-e"]).stdout.split()
    rows = [tuple(int(x) for x in out[i:i + 3]) for i in range(0, len(out), 3)]
    tree, uids = {pid}, {}
    for _ in range(4):
        for p, parent, uid in rows:
            if parent in tree or p == pid:
                tree.add(p)
                uids[p] = uid
    return uids


def fetch_in(netns, name, port=69, host="127.0.0.1"):
    """curl, inside the namespace: the file's bytes."""
    done = run(netns + ["curl", "-s", "--max-time", "20", "tftp://%s:%d/%s" % (host, port, name)])
    assert done.returncode == 0, done.stderr
    return done.stdout


@as_root
@pytest.mark.parametrize("workers", [1, 2])
def test_port_69_is_bound_as_root_and_served_as_nobody(servers, netns, tree, workers):
    s = serve(servers, "--backend", "fs:%s" % tree, "--port", "69", "--interface", "127.0.0.1",
              "--workers", str(workers), how="twistd", twistd=["-u", NOBODY, "-g", NOGROUP], prefix=netns)
    s.ready()
    if workers > 1:
        s.wait_for("worker 1: TFTP server listening on")
    for _ in range(6):
        assert fetch_in(netns, "hello.txt") == "Hello from txfbtftp\n"
    uids = uids_of(s.proc.pid)
    nobody = pwd.getpwnam(NOBODY).pw_uid
    assert len(uids) >= 1 + 2 * (workers > 1) and set(uids.values()) == {nobody}, uids  # main, launcher, worker


@as_root
def test_an_http_origin_cached_as_nobody(servers, netns, tree, tmp_path):
    origin = Server([sys.executable, "-m", "http.server", "8080", "--bind", "127.0.0.1", "--directory", str(tree)],
                    prefix=netns)
    servers.append(origin)
    nobody = pwd.getpwnam(NOBODY)
    cache = tmp_path / "cache"  # the operator's, for the serving user; what is in it is the server's
    cache.mkdir()
    os.chown(cache, nobody.pw_uid, nobody.pw_gid)
    s = serve(servers, "--backend", "http:http://127.0.0.1:8080/", "--cache-dir", str(cache), "--port", "69",
              "--interface", "127.0.0.1", how="twistd", twistd=["-u", NOBODY, "-g", NOGROUP], prefix=netns)
    s.ready()
    time.sleep(0.5)  # the origin's own start
    for _ in range(2):
        assert fetch_in(netns, "hello.txt") == "Hello from txfbtftp\n"
    made = [cache / "tmp"] + [cache / n for n in os.listdir(cache) if n.endswith((".data", ".json"))]
    assert len(made) == 3 and {os.stat(p).st_uid for p in made} == {nobody.pw_uid}
    assert "Traceback" not in s.log


# -- chroot ---------------------------------------------------------------------------------------

@as_root
@pytest.mark.parametrize("workers", [1, 2])
def test_chroot_serves_the_root_it_is_given(servers, tree, workers):
    port = free_port()
    s = serve(servers, "--backend", "fs:%s" % tree, "--port", str(port), "--interface", "127.0.0.1",
              "--workers", str(workers), how="twistd", twistd=["--chroot", str(tree)])
    s.ready()
    if workers > 1:
        s.wait_for("worker 1: TFTP server listening on")
    for _ in range(10):
        c = Client(("127.0.0.1", port))
        assert c.download("hello.txt") == b"Hello from txfbtftp\n"
        c.close()
    c = Client(("127.0.0.1", port))
    with pytest.raises(ServerError) as refused:
        c.download("../../etc/passwd")
    assert refused.value.code in (1, 2)
    assert "Traceback" not in s.log and "restarting" not in s.log


@as_root
@pytest.mark.parametrize("workers", [1, 2])
def test_a_user_in_a_chroot_must_be_listed_inside_it(servers, tree, workers):
    """twistd looks the user up after it chroots: without the user in the
    chroot's etc/passwd, one line and 67 (EX_NOUSER), not a traceback."""
    args = TWISTD + ["-n", "--pidfile=", "-u", NOBODY, "-g", NOGROUP, "--chroot", str(tree), "tftp", "--backend",
                     "fs:%s" % tree, "--interface", "127.0.0.1", "--workers", str(workers)]
    port = free_port()
    done = run(args + ["--port", str(port)])
    assert done.returncode == 67 and "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert "does not list uid %d" % pwd.getpwnam(NOBODY).pw_uid in done.stderr
    (tree / "etc").mkdir()
    (tree / "etc" / "passwd").write_text(next(line for line in open("/etc/passwd") if line.startswith(NOBODY + ":")))
    s = Server(args + ["--port", str(port)])
    servers.append(s)
    s.ready(count=workers)
    for _ in range(4):
        c = Client(("127.0.0.1", port))
        assert c.download("hello.txt") == b"Hello from txfbtftp\n"
        c.close()
    assert "Traceback" not in s.log


# -- systemd socket activation ----------------------------------------------------------------------

def test_socket_activation_serves_the_passed_socket_from_the_right_address(servers, tree):
    if shutil.which("systemd-socket-activate") is None:
        pytest.skip("systemd-socket-activate is not installed")
    port = free_port()
    s = Server(["systemd-socket-activate", "--datagram", "-l", "0.0.0.0:%d" % port] + TXFBTFTP
               + ["serve", "--systemd", "--backend", "fs:%s" % tree])
    servers.append(s)
    s.wait_for("Listening on")
    for dest in ("127.0.0.1", "127.0.0.2"):  # both on lo: the reply must leave from the one asked
        c = Client((dest, port))
        assert c.download("hello.txt", {"blksize": "1468"}) == b"Hello from txfbtftp\n"
        assert c.tid[0] == dest
        c.close()
    s.wait_for("TFTP server listening on 0.0.0.0 port %d" % port)
    assert "Traceback" not in s.log


# -- signals -----------------------------------------------------------------------------------------

def slowly(seconds, every=1):
    """A ``pause`` for Client.download: ``seconds`` before every ``every``-th ACK."""
    return lambda block: time.sleep(seconds) if block % every == 0 else None


def in_thread(fn, *args):
    box = {}

    def run_it():
        try:
            box["result"] = fn(*args)
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run_it, daemon=True)
    t.start()
    return t, box


@pytest.mark.parametrize("how", ["serve", "twistd"])
def test_sighup_reloads_the_remap_rules_without_touching_a_transfer(servers, tree, tmp_path, how):
    (tree / "a.bin").write_bytes(b"A" * 20000)
    (tree / "b.bin").write_bytes(b"B" * 3000)
    rules = tmp_path / "rules"
    rules.write_text("r ^boot$ a.bin\n")
    port = free_port()
    s = serve(servers, "--backend", "fs:%s" % tree, "--remap", str(rules), "--port", str(port),
              "--interface", "127.0.0.1", how=how).ready()
    gate, go_on = threading.Event(), threading.Event()

    def pause(block):
        if block == 3:
            gate.set()
            go_on.wait(10)

    slow = Client(("127.0.0.1", port))
    t, box = in_thread(slow.download, "boot", None, pause)
    assert gate.wait(10)
    rules.write_text("r ^boot$ b.bin\n")
    s.signal(signal.SIGHUP)
    s.wait_for("SIGHUP: reloaded remap rules from %s (1 rules)" % rules)
    go_on.set()
    t.join(10)
    assert box.get("result") == b"A" * 20000, box  # the transfer in flight is the old file, whole
    assert Client(("127.0.0.1", port)).download("boot") == b"B" * 3000  # a new one follows the new rule
    rules.write_text("rx broken ( rule\n")
    s.signal(signal.SIGHUP)
    s.wait_for("SIGHUP: not reloaded, the old configuration stays")
    assert Client(("127.0.0.1", port)).download("boot") == b"B" * 3000
    assert s.proc.poll() is None and "Traceback" not in s.log


@pytest.mark.parametrize("how", ["serve", "twistd"])
def test_sigterm_lets_a_large_download_finish_and_takes_no_new_one(servers, tree, how):
    port = free_port()
    s = serve(servers, "--backend", "fs:%s" % tree, "--port", str(port), "--interface", "127.0.0.1", how=how)
    s.ready()
    started = threading.Event()

    def pause(block):
        started.set()
        if block % 200 == 0:
            time.sleep(0.05)  # about 1.5 s in all

    big = Client(("127.0.0.1", port))
    t, box = in_thread(big.download, "big.bin", {"blksize": "1468"}, pause)
    assert started.wait(10)
    s.signal(signal.SIGTERM)
    s.wait_for("SIGTERM: stopping")
    late = Client(("127.0.0.1", port), timeout=1.0)
    with pytest.raises(OSError):  # no listening port: nothing answers (or the port is unreachable)
        late.download("hello.txt")
    t.join(30)
    assert box.get("result") == (tree / "big.bin").read_bytes(), box.get("error")
    assert s.wait(30) == 0
    assert "RRQ 'big.bin' octet: %d bytes" % (tree / "big.bin").stat().st_size in s.log
    assert "Traceback" not in s.log


def slow_transfer(servers, tree, *args):
    """A server, and a download from it that takes minutes: (server, thread, its result box)."""
    port = free_port()
    s = serve(servers, "--backend", "fs:%s" % tree, "--port", str(port), "--interface", "127.0.0.1", *args)
    s.ready()
    started = threading.Event()

    def pause(block):
        started.set()
        time.sleep(0.02)

    t, box = in_thread(Client(("127.0.0.1", port)).download, "big.bin", None, pause)
    assert started.wait(10)
    return s, t, box


def assert_cut_short(s, t, box):
    t.join(10)
    assert isinstance(box.get("error"), ServerError) and box["error"].message == "Server shutting down", box
    assert s.wait(10) == 0 and "Traceback" not in s.log


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_second_stop_signal_ends_the_transfers_at_once(servers, tree, number):
    """SIGTERM twice, or Ctrl-C twice."""
    s, t, box = slow_transfer(servers, tree, "--log-format", "json", "--shutdown-grace", "60")
    s.signal(number)
    s.wait_for("%s: stopping" % number.name)
    s.signal(number)
    assert_cut_short(s, t, box)
    assert '"outcome": "server-shutdown"' in s.log


@pytest.mark.parametrize("first,second", [(signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT)],
                         ids=["INT-TERM", "TERM-INT"])
def test_two_stop_signals_back_to_back_end_the_transfers_at_once(servers, tree, first, second):
    """The second counts even when it comes before the drain has begun.  (Two
    of the same signal sent at once may reach the process as one: the kernel
    does not count them.)"""
    s, t, box = slow_transfer(servers, tree, "--shutdown-grace", "60")
    s.signal(first)
    s.signal(second)
    assert_cut_short(s, t, box)
    assert "again: ending the transfers still running" in s.log


@as_root
def test_sighup_when_the_log_file_cannot_be_reopened_keeps_logging_and_reaches_the_workers(tree, tmp_path):
    """As nobody, the root-owned log file cannot be reopened: the old one goes
    on, and the workers still reload."""
    (tree / "a.bin").write_bytes(b"A" * 3000)
    (tree / "b.bin").write_bytes(b"B" * 3000)
    rules = tmp_path / "rules"
    rules.write_text("r ^boot$ a.bin\n")
    os.chmod(rules, 0o644)
    logdir = tmp_path / "log"
    logdir.mkdir(mode=0o755)
    logfile = logdir / "tftp.log"
    port = free_port()
    proc = subprocess.Popen(TWISTD + ["-n", "--pidfile=", "-u", NOBODY, "-g", NOGROUP, "--logfile=%s" % logfile,
                                      "tftp", "--backend", "fs:%s" % tree, "--remap", str(rules), "--port",
                                      str(port), "--interface", "127.0.0.1", "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def log():
            return logfile.read_text(errors="replace") if logfile.exists() else ""

        def logged(text, count=1):
            deadline = time.monotonic() + 20
            while log().count(text) < count:
                assert time.monotonic() < deadline and proc.poll() is None, log()[-3000:]
                time.sleep(0.05)

        logged("TFTP server listening on", count=2)
        rules.write_text("r ^boot$ b.bin\n")
        proc.send_signal(signal.SIGHUP)
        logged("SIGHUP: cannot reopen %s" % logfile)
        logged("SIGHUP: reloaded remap rules", count=2)  # the main process and the worker
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"):  # both processes
            c = Client(("127.0.0.1", port))
            c.sock.bind((source, 0))
            assert c.download("boot") == b"B" * 3000
            c.close()
        logged("RRQ 'boot' octet: 3000 bytes", count=4)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert "Traceback" not in logfile.read_text()


# -- crashes: nothing partial, ever -----------------------------------------------------------------

def test_kill_9_during_uploads_leaves_nothing_behind_after_a_restart(servers, tree):
    port = free_port()
    args = ("--backend", "fs:%s" % tree, "--writable", "--port", str(port), "--interface", "127.0.0.1")
    s = serve(servers, *args).ready()
    uploads = []
    for n in range(5):
        c = Client(("127.0.0.1", port))
        c.send(request(2, "up%d.bin" % n))
        assert c.recv() == b"\0\4\0\0"
        for block in (1, 2, 3):
            c.send(b"\0\3" + block.to_bytes(2, "big") + bytes([n]) * 512)
            assert c.recv() == b"\0\4" + block.to_bytes(2, "big")
        uploads.append(c)
    parts = [p for p in os.listdir(tree) if p.endswith(".part")]
    assert len(parts) == 5
    s.proc.kill()  # SIGKILL: no cleanup at all
    s.wait(10)
    assert len([p for p in os.listdir(tree) if p.endswith(".part")]) == 5
    again = serve(servers, *args).ready()
    again.wait_for("removed 5 unfinished uploads")
    assert [p for p in os.listdir(tree) if p.endswith(".part")] == []
    assert not [p for p in os.listdir(tree) if p.startswith("up")]
    (tree / parts[0]).write_bytes(b"left by an older version")  # a temporary name is never served
    with pytest.raises(ServerError) as refused:
        Client(("127.0.0.1", port)).download(parts[0])
    assert refused.value.code == 1


def test_a_live_writers_temporary_file_survives_another_process_start(tree):
    """The lock, not the name, says whether a temporary file is abandoned."""
    import fcntl

    from txfbtftp._backends.fs import remove_abandoned

    held = tree / ".kernel.abcd1234.part"
    left = tree / ".initrd.wxyz9876.part"
    held.write_bytes(b"being written")
    left.write_bytes(b"abandoned")
    with open(held, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        assert remove_abandoned(str(tree)) == 1
        assert held.exists() and not left.exists()


# -- one server per port -----------------------------------------------------------------------------

@pytest.mark.parametrize("second_workers", [1, 2])
def test_a_second_server_on_the_port_is_refused(servers, tree, tmp_path, second_workers):
    other = tmp_path / "other"
    other.mkdir()
    (other / "hello.txt").write_bytes(b"the wrong root\n")
    port = free_port()
    first = serve(servers, "--backend", "fs:%s" % tree, "--port", str(port), "--interface", "127.0.0.1",
                  "--workers", "2")
    first.ready()
    first.wait_for("worker 1: TFTP server listening on")
    done = run(TXFBTFTP + ["serve", "--backend", "fs:%s" % other, "--port", str(port), "--interface",
                           "127.0.0.1", "--workers", str(second_workers)])
    assert done.returncode == 71, done.stdout + done.stderr
    assert "address already in use" in done.stderr and "Traceback" not in done.stdout + done.stderr
    for _ in range(20):
        assert Client(("127.0.0.1", port)).download("hello.txt") == b"Hello from txfbtftp\n"
