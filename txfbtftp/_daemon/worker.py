"""A worker process of ``--workers N``: ``python -m txfbtftp._daemon.worker OPTIONS``.

It parses the same options as the main process, serves the same port(s)
with SO_REUSEPORT, and reports on its standard output, one JSON object per
line: each finished session's record, and twice a second the counters it
gathered since the last line (see :mod:`txfbtftp._daemon.pool`).  It exits
when the main process goes (its standard input closes).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from typing import Any, cast

from twisted.internet import protocol, stdio
from twisted.internet.task import LoopingCall
from twisted.logger import FileLogObserver, eventAsText, globalLogBeginner
from twisted.python.failure import Failure

from txfbtftp._daemon.options import Options
from txfbtftp._daemon.tap import build_tftp
from txfbtftp._types import IServerReactor

REPORT_INTERVAL = 0.5


class _Parent(protocol.Protocol):
    """Standard input: when it closes, the main process is gone."""

    def __init__(self, reactor: IServerReactor) -> None:
        self._reactor = reactor

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._reactor.running:
            self._reactor.stop()


def main(argv: list[str]) -> None:
    from twisted.internet import reactor as _reactor  # a process of its own: the default reactor
    reactor = cast(IServerReactor, _reactor)
    # The main process stamps and prefixes each line it relays.
    plain = FileLogObserver(sys.stderr, lambda e: eventAsText(e, includeTimestamp=False, includeSystem=False) + "\n")
    globalLogBeginner.beginLoggingTo([plain], redirectStandardIO=False)
    opts = Options()
    opts.parseOptions(argv)
    opts["config"] = dataclasses.replace(opts["config"], reuse_port=True)
    svc = build_tftp(opts, reactor, log_stats=False)
    out = sys.stdout

    def send(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg, separators=(",", ":")) + "\n")

    svc.stats.session_listeners.append(lambda record: send({"record": record.as_dict()}))

    def report() -> None:
        send({"counters": svc.stats.get_and_reset_all_counters(), "active": svc.stats.active})
        out.flush()

    stdio.StandardIO(_Parent(reactor), stdin=0, stdout=os.open(os.devnull, os.O_WRONLY),  # type: ignore[call-arg]
                     reactor=reactor)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    svc.privilegedStartService()
    svc.startService()
    reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
    loop = LoopingCall(report)
    loop.clock = reactor
    loop.start(REPORT_INTERVAL, now=False)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
