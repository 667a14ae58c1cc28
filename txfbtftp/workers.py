"""Several processes serving the same port(s): ``--workers N``.

Python serves one core.  With SO_REUSEPORT the kernel spreads requests over
the processes listening on a port, hashing the client's address and port,
so a client's repeated requests (and, in single-port mode, all its packets)
reach the same process; each process has its own reactor and session
sockets.  The main process serves too, and supervises N-1 workers: it
restarts one that dies (with a growing delay) and stops them with itself.

Statistics add up: a worker writes one JSON line on its standard output
for each finished session (its record) and, twice a second, the counters it
gathered since the last line; the main process adds them to its own
:class:`txfbtftp.stats.ServerStats` and hands the records to its listeners
(metrics, callbacks) as if they were its own.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Optional

from twisted.application.service import Service
from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList

from txfbtftp.logs import log
from txfbtftp.stats import ServerStats, SessionRecord

REPORT_INTERVAL = 0.5


class _Worker(protocol.ProcessProtocol):
    def __init__(self, pool: "WorkerPool", number: int) -> None:
        self.pool = pool
        self.number = number
        self._out = b""
        self._err = b""
        self.ended: Optional[Deferred] = None

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

    def processEnded(self, reason: Any) -> None:
        ended, self.ended = self.ended, None
        self.pool.ended(self, reason)
        if ended is not None:
            ended.callback(None)


class WorkerPool(Service):
    """Runs ``count`` worker processes with ``argv`` (twistd tftp options)."""

    def __init__(self, reactor: Any, argv: List[str], count: int, stats: ServerStats,
                 port: Optional[Any] = None, executable: str = sys.executable) -> None:
        self.reactor = reactor
        self.argv = list(argv)
        self.port = port
        self.count = count
        self.stats = stats
        self.executable = executable
        self.workers: Dict[int, _Worker] = {}
        self._delay: Dict[int, float] = {}
        self._pending: Dict[int, Any] = {}

    def startService(self) -> None:
        super().startService()
        for n in range(1, self.count):
            self._spawn(n)

    def _spawn(self, n: int) -> None:
        self._pending.pop(n, None)
        if not self.running:
            return
        worker = _Worker(self, n)
        args = [self.executable, "-m", "txfbtftp.workers"] + self.argv
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

    def ended(self, worker: _Worker, reason: Any) -> None:
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

    def stopService(self) -> Any:
        super().stopService()
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        waits = []
        for worker in list(self.workers.values()):
            if worker.transport is None:
                continue
            worker.ended = d = Deferred()
            waits.append(d)
            try:
                worker.transport.signalProcess("TERM")
            except Exception:
                pass
            kill = self.reactor.callLater(5, _kill, worker)
            d.addBoth(lambda _, k=kill: k.cancel() if k.active() else None)
        return DeferredList(waits)


def _kill(worker: _Worker) -> None:
    try:
        worker.transport.signalProcess("KILL")
    except Exception:
        pass


def main(argv: List[str]) -> None:
    """A worker: parse the same options, serve with SO_REUSEPORT, report to stdout."""
    import dataclasses
    import signal

    from twisted.internet import reactor, stdio
    from twisted.internet.task import LoopingCall
    from twisted.logger import FileLogObserver, eventAsText, globalLogBeginner

    from txfbtftp.service import TFTPService
    from txfbtftp.tap import Options

    # The main process stamps and prefixes each line it relays.
    plain = FileLogObserver(sys.stderr, lambda e: eventAsText(e, includeTimestamp=False, includeSystem=False) + "\n")
    globalLogBeginner.beginLoggingTo([plain], redirectStandardIO=False)
    opts = Options()
    opts.parseOptions(argv)
    config = dataclasses.replace(opts["config"], reuse_port=True)
    svc = TFTPService(opts["backend_obj"], reactor, opts["port"], opts["interfaces"], config)
    out = sys.stdout

    def send(msg: Dict[str, Any]) -> None:
        out.write(json.dumps(msg, separators=(",", ":")) + "\n")

    svc.stats.session_listeners.append(lambda record: send({"record": record.as_dict()}))

    def report() -> None:
        send({"counters": svc.stats.get_and_reset_all_counters(), "active": svc.stats.active})
        out.flush()

    class _Parent(protocol.Protocol):
        def connectionLost(self, reason: Any = None) -> None:
            if reactor.running:
                reactor.stop()  # the main process is gone

    stdio.StandardIO(_Parent(), stdin=0, stdout=os.open(os.devnull, os.O_WRONLY), reactor=reactor)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    svc.startService()
    reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
    loop = LoopingCall(report)
    loop.clock = reactor
    loop.start(REPORT_INTERVAL, now=False)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
