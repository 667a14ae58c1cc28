"""txfbtftp's logger: twisted.logger events, filtered by our own level.

twistd shows every event it is given, so the level (info by default,
``--verbose`` for debug) is applied here, before events reach the
application's observers.
"""
from __future__ import annotations

from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate, Logger,
                            globalLogPublisher)

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer = FilteringLogObserver(lambda event: globalLogPublisher(event), [_predicate])

log = Logger(namespace="txfbtftp", observer=_observer)


def set_level(name: str) -> None:
    _predicate.setLogLevelForNamespace("txfbtftp", LogLevel.levelWithName(name))
