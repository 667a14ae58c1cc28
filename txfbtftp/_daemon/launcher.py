"""The process that forks the workers of ``--workers N``.

Workers must run where and as the main process runs (chrooted, without
root), yet a chrooted, unprivileged process can neither exec Python nor bind
port 69.  So before twistd chroots, the main process starts this launcher
(a fresh interpreter, which imports what serving needs, including
``python:`` backends' modules, then chroots and drops privileges as twistd
will), and from then on asks it for workers over a socket pair: each
request carries the worker's number, the listening sockets the main process
bound for it, and one end of the worker's report channel.  The launcher
forks; the child builds its own reactor and serves
(:mod:`txfbtftp._daemon.worker`).  The launcher never imports a reactor, so
every child starts clean.  It exits when the main process goes.

It runs in a session of its own, as twistd's daemon does: signals to the
caller's process group or terminal (a hang-up, ``^C``) do not reach it or
the workers, which the main process alone tells what to do.  As a daemon's
it holds none of the caller's terminal or pipes either (``twistd ... |
cat`` returns once twistd has daemonized; the workers log through the main
process) and takes the umask twistd sets.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import traceback
from typing import Any

#: A control message: JSON, and up to this many descriptors.
_MAX_MESSAGE = 1 << 16
_MAX_FDS = 64


class Launcher:
    """The main process's end: starts the launcher, then asks it for workers."""

    def __init__(self, argv: list[str], chroot: str | None, uid: int | None, gid: int | None,
                 daemon: bool = False, umask: int | None = None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._control = ours
        if daemon and umask is None:
            umask = 0o077  # twistd's for a daemon
        # In the foreground, standard error stays the main process's (a launcher that cannot start says why).
        self._process = subprocess.Popen(
            [sys.executable, "-m", "txfbtftp._daemon.launcher", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL if daemon else None, close_fds=True, start_new_session=True)
        theirs.close()
        setup = {"argv": argv, "chroot": chroot, "uid": uid, "gid": gid, "umask": umask}
        self._control.sendmsg([json.dumps(setup).encode()])

    def spawn(self, number: int, channel: socket.socket, listeners: list[socket.socket]) -> None:
        """Fork worker ``number``, reporting on ``channel``, serving ``listeners``."""
        fds = [channel.fileno()] + [s.fileno() for s in listeners]
        socket.send_fds(self._control, [json.dumps({"spawn": number}).encode()], fds)

    def close(self) -> None:
        """The launcher exits (workers already running go on until told)."""
        self._control.close()
        try:
            self._process.wait(5)
        except (subprocess.TimeoutExpired, ChildProcessError):
            pass


def _drop(setup: dict[str, Any]) -> None:
    """Chroot and become the serving user, as twistd does for the main process."""
    from twisted.python.util import switchUID
    if setup.get("chroot"):
        os.chroot(setup["chroot"])
        os.chdir("/")
    uid, gid = setup.get("uid"), setup.get("gid")
    if uid is not None:
        if gid is None:
            import pwd
            gid = pwd.getpwuid(uid).pw_gid
        switchUID(uid, gid)


def main(control_fd: int) -> None:
    control = socket.socket(fileno=control_fd)
    raw = control.recv(_MAX_MESSAGE)
    if not raw:
        return
    setup = json.loads(raw)
    from txfbtftp._daemon.options import Options
    from txfbtftp._daemon.startup import preload
    options = Options()
    options.chroot = setup.get("chroot")  # as twistd was told for the main process
    options.parseOptions(setup["argv"])  # imports python: backends' modules while they can be found
    preload("txfbtftp._daemon.worker", "twisted.internet.epollreactor", "twisted.internet.default")
    if setup.get("umask") is not None:
        os.umask(setup["umask"])
    _drop(setup)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        message, fds, _flags, _addr = socket.recv_fds(control, _MAX_MESSAGE, _MAX_FDS)
        if not message:
            return  # the main process has gone
        request = json.loads(message)
        if os.fork() == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = 70
            try:
                from txfbtftp._daemon.worker import run
                code = run(request["spawn"], options, fds[0], fds[1:])
            except BaseException:
                traceback.print_exc()  # to the main process's standard error: a bug
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)


if __name__ == "__main__":
    main(int(sys.argv[1]))
