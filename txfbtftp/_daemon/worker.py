"""A worker process of ``--workers N``, forked by :mod:`txfbtftp._daemon.launcher`.

It serves the listening sockets the main process bound for it (a share of
the port's SO_REUSEPORT group), with a reactor of its own, and reports on
its channel to the main process, one JSON object per line: ``hello`` (its
pid, once it serves and handles signals), ``log`` (each log line), and,
when they change, the records of the sessions that ended, the counters
gathered since the last report and its active sessions: at once after a
quiet spell, then at most ten times a second.  A worker with nothing new
says nothing, so it (and the main process) may sleep while its transfers
run.
The channel is a Twisted transport, so reporting never blocks serving; the
main process adds it all to its own statistics and metrics.  SIGTERM drains
and exits, SIGHUP reloads; when the main process goes (the channel closes),
the worker drains and exits too.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import ILogObserver, LogLevel, eventAsText, globalLogBeginner
from twisted.python.failure import Failure
from zope.interface import implementer

from txfbtftp._daemon.adopt import adopt
from txfbtftp._daemon.options import Options
from txfbtftp._daemon.signals import Signals
from txfbtftp._daemon.startup import EX_SOFTWARE, classify
from txfbtftp._daemon.build import build_tftp
from txfbtftp._observe.records import SessionRecord
from txfbtftp._server.service import TFTPService
from txfbtftp._types import IServerReactor

REPORT_INTERVAL = 0.1


class Channel(Protocol):
    """The worker's end of its report channel."""

    def __init__(self, reactor: IServerReactor) -> None:
        self._reactor = reactor
        self.records: list[dict[str, Any]] = []
        self._closed: Deferred[None] | None = None
        self._lost = False

    def send(self, message: dict[str, Any]) -> None:
        if self.transport is not None and not self._lost:
            self.transport.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def record(self, record: SessionRecord) -> None:
        self.records.append(record.as_dict())

    def close(self) -> Deferred[None]:
        """Flush what is written, then close; fires once closed (at once if
        the main process has gone: a lost transport never reports closing)."""
        if self._lost or self.transport is None:
            return succeed(None)
        d = self._closed = Deferred()
        self.transport.loseConnection()
        return d

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        if self._closed is not None:
            if not self._closed.called:
                self._closed.callback(None)
        elif self._reactor.running:
            self._reactor.stop()  # the main process has gone: drain and exit
        else:
            self._reactor.callWhenRunning(self._reactor.stop)  # gone before this one began to serve


@implementer(ILogObserver)
class _ToChannel:
    """Log events, as text, to the main process (which stamps and prefixes them)."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level") or LogLevel.info
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        self._channel.send({"log": text, "level": level.name})


def run(number: int, options: Options, channel_fd: int, listen_fds: list[int]) -> int:
    """Serve until told to stop; the exit status."""
    from twisted.internet.default import install
    install()  # a forked child's own, first reactor (installed, not imported: it may be chrooted)
    from twisted.internet import reactor as _reactor
    reactor = cast(IServerReactor, _reactor)
    channel = Channel(reactor)
    adopt(reactor, channel_fd, channel)
    os.close(channel_fd)
    globalLogBeginner.beginLoggingTo([_ToChannel(channel)], redirectStandardIO=False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listeners = [socket.socket(fileno=fd) for fd in listen_fds]
    svc = build_tftp(options, reactor, log_stats=False, listeners=listeners, index=number)
    svc.stats.session_listeners.append(channel.record)
    try:
        svc.privilegedStartService()
        svc.startService()
    except Exception as e:
        problem = classify(e)
        channel.send({"fatal": str(problem), "code": problem.code})
        channel.close().addBoth(lambda _: reactor.stop())
        reactor.run()
        return problem.code if problem.code != EX_SOFTWARE else 1
    Signals(reactor, svc).startService()
    # Said once the reactor runs, after the handlers are installed: the main
    # process signals a worker (SIGTERM, SIGHUP) only once it knows its pid.
    reactor.callWhenRunning(channel.send, {"hello": os.getpid(), "worker": number})
    report = _Reporter(channel, svc, reactor)
    reactor.callWhenRunning(report)

    def stop() -> Deferred[None]:
        report.stop()
        return svc.stopService().addCallback(lambda _: report()).addCallback(lambda _: channel.close())

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.run()
    return 0


class _Reporter:
    """Tells the main process the worker's new session records, counters
    and active sessions when they change (every change of ``active`` comes
    with a counter's), and nothing while there is nothing new.  A timer
    polling for changes would end every park of the worker's poller (and
    of the main process's, which it wakes) ten times a second while a WAN
    download runs.  The first change after a quiet spell goes at once: the
    shared session limits count on it."""

    def __init__(self, channel: Channel, svc: TFTPService, clock: IReactorTime) -> None:
        self._channel = channel
        self._stats = svc.stats
        self._clock = clock
        self._active: int | None = None
        self._sent_at = float("-inf")
        self._call: IDelayedCall | None = None
        svc.stats.change_listeners.append(self.changed)

    def changed(self) -> None:
        if self._call is None:
            delay = max(0.0, self._sent_at + REPORT_INTERVAL - self._clock.seconds())
            self._call = self._clock.callLater(delay, self)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def __call__(self) -> None:
        self.stop()
        channel, stats = self._channel, self._stats
        records, channel.records = channel.records, []
        counters = {name: value for name, value in stats.get_and_reset_all_counters().items() if value}
        if records or counters or stats.active != self._active:
            self._active = stats.active
            self._sent_at = self._clock.seconds()
            channel.send({"records": records, "counters": counters, "active": stats.active})


if __name__ == "__main__":
    sys.exit("a worker is started by the launcher (txfbtftp._daemon.launcher), not by hand")
