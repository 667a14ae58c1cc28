"""The main process's side of ``--workers N``: N processes serving one port.

Python serves one core.  With SO_REUSEPORT the kernel spreads requests over
the sockets bound to a port; a filter on the group sends each client
address to one process (:mod:`txfbtftp._net.steer`), so the limits per
client hold for the server as a whole, while the server-wide ones are
divided among the processes (:meth:`~txfbtftp.ServerConfig.share`).  Here
the main process binds all N sockets of each
interface itself, while still privileged: first it checks that the port is
free for an exclusive bind (so a second server on the port fails with
"address already in use", as tftpd-hpa does, instead of joining the group),
then binds the group, keeps one share for its own
:class:`~txfbtftp.TFTPService` and hands the others to the workers, which
the launcher (:mod:`txfbtftp._daemon.launcher`) forks.  Because the main
process holds every socket, a worker that dies and is restarted finds its
socket where it was: the group never changes, no client is sent to another
process, and requests that arrive meanwhile wait in the socket's queue.

Statistics add up: each worker reports its session records, counters and
log lines on a stream of its own (:mod:`txfbtftp._daemon.worker`), and the
main process hands them to its own statistics and metrics as if they were
its own.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import LogLevel
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from txfbtftp._daemon.adopt import adopt
from txfbtftp._daemon.launcher import Launcher
from txfbtftp._daemon.options import Options
from txfbtftp._daemon.startup import EX_OSERR, StartupError
from txfbtftp._net.listener import bind_listening_socket
from txfbtftp._net.steer import steer_by_source
from txfbtftp._observe.logs import log
from txfbtftp._observe.records import SessionRecord
from txfbtftp._server.service import TFTPService
from txfbtftp._types import IPoolReactor

#: A worker that dies this soon after starting is restarted after a growing delay.
_STEADY = 30.0


class _Channel(LineOnlyReceiver):
    """The main process's end of one worker's report stream."""

    delimiter = b"\n"
    MAX_LENGTH = 64 << 20

    def __init__(self, pool: WorkerPool, number: int) -> None:
        self.pool = pool
        self.number = number
        self.pid: int | None = None
        #: Signals asked for before the worker said its pid, sent once it has.
        self.pending: list[int] = []
        self.ended: Deferred[None] = Deferred()

    def lineReceived(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return
        if isinstance(message, dict):
            self.pool.report(self, message)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.pool.ended(self)
        self.ended.callback(None)


class WorkerPool(Service):
    """Binds every process's share of the port(s), and keeps N-1 workers running."""

    def __init__(self, reactor: IPoolReactor, options: Options, tftp: TFTPService) -> None:
        self.reactor = reactor
        self.options = options
        self.tftp = tftp
        self.count = options["workers"]
        self.stats = tftp.stats
        #: Each worker's listening sockets, by worker number (1..N-1).
        self.shares: dict[int, list[socket.socket]] = {}
        self.channels: dict[int, _Channel] = {}
        # Started now, while twistd has neither chrooted nor dropped privileges.
        parent: dict[str, Any] = options.parent or {}
        self._launcher: Launcher | None = Launcher(
            options["argv"], parent.get("chroot"), parent.get("uid"), parent.get("gid"),
            daemon=options.parent is not None and not (parent.get("nodaemon") or parent.get("debug")),
            umask=parent.get("umask"))
        self._started: dict[int, float] = {}
        self._delay: dict[int, float] = {}
        self._pending: dict[int, IDelayedCall] = {}

    # -- start --------------------------------------------------------------------
    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        shares: list[list[socket.socket]] = [[] for _ in range(self.count)]
        for iface in self.options["interfaces"]:
            iface, port = _exclusive_check(iface, self.options["port"])
            for share in shares:
                share.append(bind_listening_socket(iface, port, reuse_port=True))
                port = share[-1].getsockname()[1]  # port 0: the others join the first one's
            try:
                steer_by_source(shares[0][-1], self.count)
            except OSError as e:
                log.warn("cannot steer clients by address ({err}): limits per client are kept per process",
                         err=e)
        self.tftp.listeners = shares[0]
        self.shares = dict(enumerate(shares[1:], 1))

    def startService(self) -> None:
        if not self.shares:
            self.privilegedStartService()
        super().startService()
        for n in self.shares:
            self._spawn(n)

    def _spawn(self, n: int) -> None:
        self._pending.pop(n, None)
        if not self.running or n not in self.shares:
            return
        if self._launcher is None:
            self._abandon(n)
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = self.channels[n] = _Channel(self, n)
        adopt(self.reactor, ours.fileno(), channel)
        ours.close()
        try:
            self._launcher.spawn(n, theirs, self.shares[n])
        except ConnectionError as e:
            # Started before the chroot and the change of user, it cannot be started again.
            log.error("cannot start worker {n}: the launcher has exited ({err}); no worker can be started "
                      "until the server is restarted", n=n, err=e)
            self._launcher.close()
            self._launcher = None
            self._abandon(n)
        except OSError as e:
            log.error("cannot start worker {n}: {err}", n=n, err=e)
        finally:
            theirs.close()
        self._started[n] = self.reactor.seconds()

    def _abandon(self, n: int) -> None:
        """Close the share of worker ``n``, which will not run again: held
        by no one, its socket would take its clients' requests and answer none."""
        for sock in self.shares.pop(n):
            sock.close()
        log.warn("worker {n}'s share of the port is closed: its clients are sent to the other processes", n=n)

    # -- what workers say -------------------------------------------------------------
    def report(self, channel: _Channel, message: dict[str, Any]) -> None:
        n = channel.number
        if "hello" in message:
            channel.pid = message["hello"]
            log.info("worker {n} started (pid {pid})", n=n, pid=channel.pid)
            pending, channel.pending = channel.pending, []
            for number in pending:  # e.g. the SIGTERM of a stop that began while it started
                _kill(channel.pid, number)
        if "log" in message:
            level = LogLevel.levelWithName(message.get("level", "info"))
            log.emit(level, "worker {n}: {text}", n=n, text=message["log"])
        if "fatal" in message:
            log.error("worker {n} cannot start: {why}", n=n, why=message["fatal"])
        stats = self.stats
        for fields in message.get("records", ()):
            record = SessionRecord(**fields)
            for listener in stats.session_listeners:
                try:
                    listener(record)
                except Exception:
                    log.failure("session statistics callback {callback!r} failed", callback=listener)
        for name, value in message.get("counters", {}).items():
            stats.increment_counter(name, value)
        if "active" in message:
            stats.peers_active[n] = message["active"]

    def ended(self, channel: _Channel) -> None:
        n = channel.number
        if self.channels.get(n) is channel:
            del self.channels[n]
        lost = self.stats.peers_active.pop(n, 0)
        if not self.running or n not in self.shares:
            return
        if lost:
            self.stats.increment_counter("sessions_lost", lost)  # their records died with the worker
        up = self.reactor.seconds() - self._started.get(n, 0.0)
        delay = self._delay[n] = 0.0 if up > _STEADY else min(max(self._delay.get(n, 0.25), 0.25) * 2, 30.0)
        log.warn("worker {n} exited with {lost} transfers in flight; restarting it in {delay:g}s", n=n,
                 lost=lost, delay=delay)
        self._pending[n] = self.reactor.callLater(delay, self._spawn, n)

    def signal(self, name: str) -> None:
        """Send the signal ``name`` (``HUP``, ``TERM``, ``KILL``) to every worker."""
        number = getattr(signal, "SIG" + name)
        for channel in list(self.channels.values()):
            if channel.pid is not None:
                _kill(channel.pid, number)
            elif number not in channel.pending:
                channel.pending.append(number)

    # -- stop ---------------------------------------------------------------------------
    def stopService(self) -> Deferred[None]:
        super().stopService()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        waits = [c.ended for c in self.channels.values()]
        self.signal("TERM")
        grace = self.options["config"].shutdown_grace
        kill = self.reactor.callLater(grace + 5.0, self.signal, "KILL")
        done = DeferredList(waits).addCallback(lambda _: None) if waits else succeed(None)
        return done.addBoth(self._stopped, kill)

    def _stopped(self, result: object, kill: IDelayedCall) -> None:
        if kill.active():
            kill.cancel()
        if self._launcher is not None:
            self._launcher.close()
            self._launcher = None
        for share in self.shares.values():
            for sock in share:
                sock.close()
        self.shares = {}


def _kill(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def _exclusive_check(interface: str, port: int) -> tuple[str, int]:
    """Fail as a second server on the port would with tftpd-hpa: bind it
    without SO_REUSEPORT first (a reuseport group already there refuses).
    The interface (``::`` falls back to ``0.0.0.0`` without IPv6) and port to use."""
    try:
        probe = bind_listening_socket(interface, port)
    except OSError as e:
        if interface == "::" and e.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
            log.warn("IPv6 unavailable ({err}); listening on 0.0.0.0 instead", err=e)
            return _exclusive_check("0.0.0.0", port)
        if e.errno == errno.EADDRINUSE:
            raise StartupError("cannot listen on %s port %d: address already in use" % (interface, port),
                               EX_OSERR) from None
        raise
    if port == 0:
        port = probe.getsockname()[1]
    probe.close()
    return interface, int(port)
