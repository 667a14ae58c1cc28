"""Stopping without cutting transfers short.

When the service stops, its listening ports close at once (so a restarted
server can bind them while old transfers finish; in ``--single-port`` mode
the port carries the sessions and stays open, and new requests are dropped:
a client that gets no answer repeats itself and reaches the next server,
while an ERROR would make boot firmware give up).  Transfers in flight then
have ``grace`` seconds to finish; what is left is ended with ``ERROR 0``
"Server shutting down", recorded as ``server_shutdown``.  :meth:`Drain.now`
ends the wait early (a second SIGTERM).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from txfbtftp._observe.logs import log
from txfbtftp._server.dispatcher import AnySession

#: How often the drain looks whether the last transfer has ended.
_POLL = 0.1


class Drain:
    """Waits for ``sessions()`` to empty, at most ``grace`` seconds."""

    def __init__(self, clock: IReactorTime, sessions: Callable[[], Iterable[AnySession]], grace: float) -> None:
        self._clock = clock
        self._sessions = sessions
        self._grace = grace
        self._loop: LoopingCall | None = None
        self.done: Deferred[None] = Deferred()

    def start(self) -> Deferred[None]:
        for session in list(self._sessions()):
            if session.complete:
                session.abandon("server stopping")  # an upload only dallying: it is done
        left = list(self._sessions())
        if not left or self._grace <= 0:
            self.now()
            return self.done
        log.info("stopping: waiting up to {grace:g}s for {n} transfers to finish", grace=self._grace, n=len(left))
        self._deadline = self._clock.seconds() + self._grace
        self._loop = LoopingCall(self._check)
        self._loop.clock = self._clock
        self._loop.start(_POLL, now=False)
        return self.done

    def _check(self) -> None:
        if not any(True for _ in self._sessions()) or self._clock.seconds() >= self._deadline:
            self.now()

    def now(self) -> None:
        """End the wait: every session left is ended with an ERROR."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        left = list(self._sessions())
        if left:
            log.info("stopping: ending {n} transfers", n=len(left))
        for session in left:
            session.shut_down()
        if not self.done.called:
            self.done.callback(None)
