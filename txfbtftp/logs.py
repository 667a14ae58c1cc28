"""txfbtftp's logger: twisted.logger events, filtered by our own level.

twistd shows every event it is given, so the level (info by default,
``--verbose`` for debug) is applied here, before events reach the
application's observers.
"""
from __future__ import annotations

import json
import sys
from typing import IO, Optional

from twisted.logger import (FilteringLogObserver, ILogObserver, LogLevel, LogLevelFilterPredicate, Logger,
                            eventAsText, globalLogPublisher, jsonFileLogObserver)
from zope.interface import implementer

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer = FilteringLogObserver(lambda event: globalLogPublisher(event), [_predicate])

log = Logger(namespace="txfbtftp", observer=_observer)


def set_level(name: str) -> None:
    _predicate.setLogLevelForNamespace("txfbtftp", LogLevel.levelWithName(name))


def json_observer(out: Optional[IO[str]] = None) -> ILogObserver:
    """JSON lines on ``out`` (standard output by default): one event per line.

    Each line is twisted.logger's ``eventAsJSON`` (so ``eventsFromJSONLogFile``
    reads it back) plus ``text``, the formatted message, and ``level``, for
    log shippers that do not know Twisted.  A factory for ``twistd --logger
    txfbtftp.logs.json_observer``, which ``twistd tftp --log-format json``
    selects.
    """
    stream = out if out is not None else sys.stdout
    inner = jsonFileLogObserver(stream, recordSeparator="")

    @implementer(ILogObserver)
    def observe(event: dict) -> None:
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
