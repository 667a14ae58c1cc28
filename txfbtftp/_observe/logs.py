"""txfbtftp's logger: twisted.logger events, filtered by our own level.

twistd shows every event it is given, so the level (info by default,
``--verbose`` for debug) is applied here, before events reach the
application's observers.
"""
from __future__ import annotations

import json
import sys
from typing import IO, Any
from collections.abc import Callable

from twisted.logger import (FilteringLogObserver, ILogObserver, LogLevel, LogLevelFilterPredicate, Logger,
                            eventAsText, globalLogPublisher, jsonFileLogObserver)
from zope.interface import implementer

from txfbtftp._buckets import Buckets

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer = FilteringLogObserver(globalLogPublisher, [_predicate])

log = Logger(namespace="txfbtftp", observer=_observer)


def fmt(addr: tuple[Any, ...]) -> str:
    """``192.0.2.7:41000`` or ``[2001:db8::7]:41000``."""
    host, port = addr[0], addr[1]
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def set_level(name: str) -> None:
    _predicate.setLogLevelForNamespace("txfbtftp", LogLevel.levelWithName(name))


def json_observer(out: IO[str] | None = None) -> ILogObserver:
    """JSON lines on ``out`` (standard output by default): one event per line.

    Each line is twisted.logger's ``eventAsJSON`` (so ``eventsFromJSONLogFile``
    reads it back) plus ``text``, the formatted message, and ``level``, for
    log shippers that do not know Twisted.  A factory for ``twistd --logger
    txfbtftp.json_observer``, which ``twistd tftp --log-format json``
    selects.
    """
    stream = out if out is not None else sys.stdout
    inner = jsonFileLogObserver(stream, recordSeparator="")

    @implementer(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        level = event.get("log_level")
        extra = dict(text=eventAsText(event, includeTimestamp=False, includeSystem=False),
                     level=level.name if level is not None else None)
        try:
            inner(dict(event, **extra))
        except Exception:
            # eventAsJSON cannot flatten an event whose format names a missing
            # key; keep the line rather than lose it.
            extra.update(log_namespace=event.get("log_namespace"), log_time=event.get("log_time"))
            stream.write(json.dumps(extra) + "\n")
            stream.flush()

    return observe


class LogLimiter:
    """At most one log line per source per ``interval`` seconds, and, with a
    ``rate``, at most that many a second from all sources together (a flood
    with forged addresses has a new source per packet); counts the rest."""

    def __init__(self, clock: Callable[[], float], interval: float = 60.0, size: int = 4096,
                 rate: float = 0.0) -> None:
        self._clock = clock
        self.interval = interval
        self._size = size
        self._last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}
        self.rate = rate
        self._all = Buckets(clock, rate, 10 * rate, size=1) if rate else None
        #: Lines the cap on all sources held back since :meth:`take_dropped`.
        self.dropped = 0

    def allow(self, source: str) -> bool:
        now = self._clock()
        last = self._last.get(source)
        if last is not None and now - last < self.interval:
            self.suppressed[source] = self.suppressed.get(source, 0) + 1
            return False
        if self._all is not None and not self._all.take(""):
            self.dropped += 1
            return False
        if len(self._last) >= self._size:
            self._last.clear()
            self.suppressed.clear()
        self._last[source] = now
        return True

    def take_dropped(self) -> int:
        dropped, self.dropped = self.dropped, 0
        return dropped
