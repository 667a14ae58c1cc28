"""The main process's side of ``--workers N``: several processes serving the same port(s).

Python serves one core.  With SO_REUSEPORT the kernel spreads requests over
the processes listening on a port, hashing the client's address and port,
so a client's repeated requests (and, in single-port mode, all its packets)
reach the same process; each process has its own reactor and session
sockets.  The main process serves too, and supervises N-1 workers: it
restarts one that dies (with a growing delay) and stops them with itself.

Statistics add up: a worker writes one JSON line on its standard output
for each finished session (its record) and, twice a second, the counters it
gathered since the last line; the main process adds them to its own
:class:`~txfbtftp.ServerStats` and hands the records to its listeners
(metrics, callbacks) as if they were its own.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from txfbtftp._observe.logs import log
from txfbtftp._observe.records import SessionRecord
from txfbtftp._observe.stats import ServerStats
from txfbtftp._types import IPoolReactor

REPORT_INTERVAL = 0.5


class _Worker(protocol.ProcessProtocol):
    """One worker process: its reports on stdout, its log lines on stderr."""

    def __init__(self, pool: WorkerPool, number: int) -> None:
        self.pool = pool
        self.number = number
        self._out = b""
        self._err = b""
        self.ended: Deferred[None] | None = None

    def outReceived(self, data: bytes) -> None:
        self._out += data
        *lines, self._out = self._out.split(b"\n")
        for line in lines:
            if line:
                self.pool.report(self.number, line)

    def errReceived(self, data: bytes) -> None:
        self._err += data
        *lines, self._err = self._err.split(b"\n")
        for line in lines:
            log.info("worker {n}: {line}", n=self.number, line=line.decode("utf-8", "replace"))

    def signal(self, name: str) -> None:
        if self.transport is not None:
            try:
                self.transport.signalProcess(name)
            except ProcessExitedAlready:
                pass

    def processEnded(self, reason: Failure) -> None:
        ended, self.ended = self.ended, None
        self.pool.ended(self, reason)
        if ended is not None:
            ended.callback(None)


class WorkerPool(Service):
    """Runs ``count`` worker processes with ``argv`` (twistd tftp options)."""

    def __init__(self, reactor: IPoolReactor, argv: list[str], count: int, stats: ServerStats,
                 port: Callable[[], int] | None = None, executable: str = sys.executable) -> None:
        self.reactor = reactor
        self.argv = list(argv)
        self.port = port
        self.count = count
        self.stats = stats
        self.executable = executable
        self.workers: dict[int, _Worker] = {}
        self._delay: dict[int, float] = {}
        self._pending: dict[int, IDelayedCall] = {}

    def startService(self) -> None:
        super().startService()
        for n in range(1, self.count):
            self._spawn(n)

    def _spawn(self, n: int) -> None:
        self._pending.pop(n, None)
        if not self.running:
            return
        worker = _Worker(self, n)
        args = [self.executable, "-m", "txfbtftp._daemon.worker"] + self.argv
        if self.port is not None:
            args += ["--port", str(self.port())]  # the port the main process got, if it asked for 0
        try:
            self.reactor.spawnProcess(worker, self.executable, args, env=os.environ.copy(),
                                      childFDs={0: "w", 1: "r", 2: "r"})
        except Exception:
            log.failure("cannot start worker {n}", n=n)
            self._retry(n)
            return
        self.workers[n] = worker

    def report(self, n: int, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):  # a stray print from a backend, say
            log.info("worker {n}: {line}", n=n, line=line.decode("utf-8", "replace"))
            return
        stats = self.stats
        if "record" in msg:
            record = SessionRecord(**msg["record"])
            for listener in stats.session_listeners:
                try:
                    listener(record)
                except Exception:
                    log.failure("session statistics callback {callback!r} failed", callback=listener)
        else:
            for name, value in msg.get("counters", {}).items():
                stats.increment_counter(name, value)
            stats.peers_active[n] = msg.get("active", 0)
            self._delay.pop(n, None)  # it is up and reporting: the next restart is quick again

    def ended(self, worker: _Worker, reason: Failure) -> None:
        n = worker.number
        if self.workers.get(n) is worker:
            del self.workers[n]
        self.stats.peers_active.pop(n, None)
        if self.running:
            log.warn("worker {n} exited ({reason}); restarting", n=n, reason=reason.value)
            self._retry(n)

    def _retry(self, n: int) -> None:
        if self.running:
            delay = self._delay[n] = min(self._delay.get(n, 0.5) * 2, 30.0)
            self._pending[n] = self.reactor.callLater(delay, self._spawn, n)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        waits: list[Deferred[None]] = []
        for worker in list(self.workers.values()):
            if worker.transport is None:
                continue
            d: Deferred[None] = Deferred()
            worker.ended = d
            waits.append(d)
            worker.signal("TERM")
            kill = self.reactor.callLater(5, worker.signal, "KILL")
            d.addBoth(_cancelling(kill))
        return DeferredList(waits).addCallback(lambda _: None)


def _cancelling(call: IDelayedCall) -> Callable[[object], None]:
    def cancel(_: object) -> None:
        if call.active():
            call.cancel()
    return cancel
