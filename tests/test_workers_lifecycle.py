"""``--workers``: the workers live and die with the server, whatever happens to it."""
import os
import signal
import subprocess
import time

from .processes import TWISTD, Client, Server, free_port


def _children(pid, pattern=None):
    args = ["pgrep", "-P", str(pid)] + (["-f", pattern] if pattern else [])
    return [int(p) for p in subprocess.run(args, capture_output=True, text=True).stdout.split()]


def launcher_and_workers(pid):
    """The launcher the main process ``pid`` started, and the workers it forked."""
    launchers = _children(pid, "txfbtftp._daemon.launcher")
    return launchers, [w for launcher in launchers for w in _children(launcher)]


def alive(pid):
    """Running (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def catches(pid, number):
    """Has ``pid`` a handler for signal ``number``?"""
    with open("/proc/%d/status" % pid) as f:
        caught = next(line for line in f if line.startswith("SigCgt:")).split()[1]
    return bool(int(caught, 16) >> (number - 1) & 1)


def wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def kill_all(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start(servers, root, *args, cwd=None):
    port = free_port()
    s = Server(TWISTD + ["-n", "--pidfile=", "tftp", "--backend", "fs:%s" % root, "--port", str(port),
                         "--interface", "127.0.0.1", "--stats-interval", "0"] + list(args), cwd=cwd)
    servers.append(s)
    return s, port


def test_workers_exit_when_the_main_process_is_killed(servers, root):
    """A worker whose main process died (kill -9, OOM) must not keep the port
    and serve on unsupervised: it drains and exits, as on SIGTERM."""
    s, _ = start(servers, root, "--workers", "3")
    s.ready(count=3)
    launchers, workers = launcher_and_workers(s.proc.pid)
    assert len(workers) == 2
    try:
        s.proc.kill()
        s.wait()
        assert wait_gone(workers, 5), "workers still running after their main process died"
    finally:
        kill_all(launchers + workers)


def test_sigterm_while_the_workers_start_stops_them_at_once(servers, root):
    """A stop that begins before a worker has said its pid must still reach
    it: otherwise it serves on, holding the port, until killed after the grace."""
    s, _ = start(servers, root, "--workers", "3", "--shutdown-grace", "20")
    s.ready()  # the main process's own: the launcher is still starting, the workers have not
    deadline = time.monotonic() + 10
    while not catches(s.proc.pid, signal.SIGTERM):  # the main reactor runs, its handlers are in
        assert time.monotonic() < deadline, s.log
        time.sleep(0.005)
    assert "started (pid" not in s.log
    s.signal(signal.SIGTERM)
    began = time.monotonic()
    assert s.wait(15) == 0
    assert time.monotonic() - began < 5, s.log
    for n in (1, 2):
        assert "worker %d: SIGTERM: stopping" % n in s.log, s.log


def test_a_restarted_worker_serves_the_remap_rules_of_the_last_reload(servers, root, tmp_path):
    """The rules a SIGHUP loaded are the server's: a worker restarted after it
    must not go back to those of the start."""
    (root / "one").write_bytes(b"one")
    (root / "two").write_bytes(b"two")
    rules = tmp_path / "rules"
    rules.write_text("r ^alias one\n")
    s, port = start(servers, root, "--workers", "2", "--remap", str(rules))
    s.ready(count=2)
    rules.write_text("r ^alias two\n")
    s.signal(signal.SIGHUP)
    s.wait_for("worker 1: SIGHUP: reloaded remap rules")
    _, workers = launcher_and_workers(s.proc.pid)
    os.kill(workers[0], signal.SIGKILL)
    s.wait_for("worker 1 started", count=2)
    served = len(s.lines)
    for i in range(1, 17):  # sources the kernel spreads over both processes
        c = Client(("127.0.0.1", port))
        c.sock.bind(("127.0.0.%d" % i, 0))
        try:
            assert c.download("alias") == b"two", "from 127.0.0.%d" % i
        finally:
            c.close()
    s.wait_for("RRQ 'alias'", count=16)  # a worker's lines reach the main process's log a little later
    assert any("worker 1:" in line and "RRQ 'alias'" in line for line in s.lines[served:]), s.log


def test_a_daemon_with_workers_lets_go_of_its_caller(root, tmp_path):
    """twistd without -n returns once it has daemonized: its launcher and
    workers must not keep the caller's pipe open (``ssh host twistd ...``,
    init scripts and pipelines would hang), nor share its session."""
    port = free_port()
    pidfile, logfile = tmp_path / "twistd.pid", tmp_path / "twistd.log"
    argv = TWISTD + ["--pidfile=%s" % pidfile, "--logfile=%s" % logfile, "tftp", "--backend", "fs:%s" % root,
                     "--port", str(port), "--interface", "127.0.0.1", "--workers", "2"]
    caller = subprocess.Popen(["sh", "-c", '"$@" 2>&1 | cat', "sh"] + argv, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, start_new_session=True)
    pids = []
    try:
        try:
            caller.communicate(timeout=15)
            returned = True
        except subprocess.TimeoutExpired:
            returned = False
        deadline = time.monotonic() + 15
        while "worker 1 started (pid" not in (logfile.read_text() if logfile.exists() else ""):
            assert time.monotonic() < deadline, "no worker started"
            time.sleep(0.05)
        main = int(pidfile.read_text())
        worker = int(logfile.read_text().split("worker 1 started (pid ", 1)[1].split(")", 1)[0])
        with open("/proc/%d/stat" % worker) as f:
            launcher = int(f.read().rsplit(")", 1)[1].split()[1])
        pids = [main, launcher, worker]
        assert returned, "the pipeline did not end once twistd had daemonized"
        assert os.getsid(worker) != caller.pid and os.getsid(launcher) != caller.pid
        with open("/proc/%d/status" % worker) as f:
            assert "Umask:\t0077\n" in f.read()  # twistd's for a daemon
        c = Client(("127.0.0.1", port))
        try:
            assert c.download("hello.txt") == b"Hello from txfbtftp\n"
        finally:
            c.close()
        os.kill(main, signal.SIGTERM)
        assert wait_gone(pids, 10), logfile.read_text()
    finally:
        kill_all(pids)
        if caller.poll() is None:
            os.killpg(caller.pid, signal.SIGKILL)
            caller.wait()


def test_the_share_of_a_worker_that_cannot_be_restarted_is_closed(servers, root):
    """Without its launcher no worker can start again; the dead worker's
    socket, still in the port's group, would swallow its clients' requests."""
    s, port = start(servers, root, "--workers", "2")
    s.ready(count=2)
    launchers, workers = launcher_and_workers(s.proc.pid)
    kill_all(launchers)
    kill_all(workers)
    s.wait_for("worker 1's share of the port is closed")
    assert "the launcher has exited" in s.log
    for i in range(1, 17):
        c = Client(("127.0.0.1", port), timeout=3)
        c.sock.bind(("127.0.0.%d" % i, 0))
        try:
            assert c.download("hello.txt") == b"Hello from txfbtftp\n", "from 127.0.0.%d" % i
        finally:
            c.close()
