"""The compiled lanes of one poller: their hot path, their deadlines, their sleep.

Where the optional compiled module is built, an established download's
socket may have a *lane* (:mod:`txfbtftp._speedups`): the compiled twin of
its DATA hot path, which serves a whole-window ACK without running Python
and hands everything else back to the session's own handler.

Rules:

1. A lane's session is told of its deadline by its lanes
   (``session.deadline_came(machine, now)``), not by the sessions' timer
   wheel.  A lane moves its deadline at every ACK, and a reactor timer set
   for the old one would wake the process about once per round trip for
   nothing.  The deadlines sit in one heap (:class:`_speedups.Deadlines`)
   that each lane moves itself; a session files its deadline there after
   any step Python took (:meth:`Lanes.keep`).
2. The deadlines are looked at whenever the poller runs (:meth:`Lanes.look`),
   while it sleeps (the sleep ends at the earliest), and, while it is back in
   the reactor, by one reactor timer of their own (:meth:`Lanes.away`).
3. Under the epoll reactor, a poller with nothing to read *parks* instead of
   going back to the reactor (:meth:`Lanes.park`): it sleeps in the compiled
   module with the reactor's epoll moved inside its own meanwhile, serving
   the lanes' ACKs as they come, until Python has work (a datagram without
   a lane, a deadline, the reactor's next timer, any of the reactor's own
   descriptors ready, a signal).  A lock-step client then costs one wake-up
   of a few system calls a block, not a trip through the reactor.
4. Every call into the compiled module runs under the poller's error
   handling: what a lane leaves to Python comes back as ``(call, a, b)``.
"""
from __future__ import annotations

import select
import socket
from typing import Any, cast
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime
from twisted.python.failure import Failure

from txfbtftp._observe.logs import log
from txfbtftp._protocol.machine import State

#: The longest sleep outside the reactor, in seconds.  Its timers,
#: descriptors, signals and ``stop()`` end one at once: this only bounds a
#: wake-up that has nothing to do.
PARK = 1.0
#: The same while the reactor is driven by hand (``reactor.iterate()``, not
#: ``run()``), whose call may take that long while downloads run.
PARK_ITERATE = 0.1

Handler = Callable[[bytes, tuple[Any, ...]], None]


class Lanes:
    """The lanes of one poller (whose epoll is ``epoll``), by descriptor."""

    def __init__(self, speedups: Any, reactor: IReactorFDSet, timers: IReactorTime, epoll: select.epoll,
                 sender: Any, quick: float = 0.0) -> None:
        self._speedups = speedups
        self.reactor = reactor
        self.timers = timers
        self._ep = epoll
        self._sender = sender
        #: A park ends once a datagram comes this soon: busy polling would catch the next.
        self.quick = quick
        self.table: dict[int, Any] = {}
        self.deadlines = speedups.Deadlines()
        #: The reactor timer for the earliest deadline while the poller is away.
        self._alarm: IDelayedCall | None = None
        #: When the latest alarm cancelled to park was set for (Twisted's
        #: ``timeout()`` counts a cancelled call until then).
        self._cancelled = 0.0
        self.reading = False
        # Parking needs the epoll reactor: its epoll is private, but it is
        # what says when to stop.
        poller = getattr(reactor, "_poller", None)
        timeout = getattr(reactor, "timeout", None)
        self._park: Callable[..., tuple[Any, Any, int]] | None = None
        if isinstance(poller, select.epoll) and callable(timeout):
            self._park = speedups.park
            self._reactor_ep = poller
            self._timeout: Callable[[], float | None] = timeout

    def open(self, sock: socket.socket, session: Any, machine: Any, reader: Any, dest: tuple[Any, ...],
             handler: Handler) -> bool:
        """A lane for ``sock``'s download, if the lane takes the transfer."""
        fd = sock.fileno()
        if fd < 0:
            return False
        try:
            self.table[fd] = self._speedups.Lane(session, machine, reader, fd, dest, handler, self._sender,
                                                 State.TRANSFER, self.deadlines)
        except (TypeError, ValueError):
            return False  # a transfer the lane does not take (a window over 256 blocks)
        return True

    def close(self, fd: int) -> None:
        lane = self.table.pop(fd, None)
        if lane is not None:
            self.deadlines.forget(lane)

    def keep(self, fd: int, deadline: float) -> None:
        """The session of ``fd``'s lane has its deadline at ``deadline`` now."""
        lane = self.table.get(fd)
        if lane is not None:
            self.deadlines.keep(lane, deadline)
            if not self.reading:
                self.away()

    def serve(self, events: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Let the lanes serve their sockets' datagrams; the events left."""
        try:
            rest, later = self._speedups.serve(events, self.table, _lane_failed)
        except Exception:
            # Only a failure to allocate gets here: this batch's datagrams
            # are lost packets, which the sessions' deadlines resend.
            self._failed()
            return []
        _run(later)
        return rest

    def look(self) -> None:
        """Tell the sessions whose deadline has come."""
        deadlines = self.deadlines
        if deadlines:
            now = self.timers.seconds()
            if deadlines.next <= now:
                try:
                    later = deadlines.due(now)
                except Exception:
                    self._failed()
                    return
                _run(later)

    def _failed(self) -> None:
        log.failure("error in the compiled lanes")
        self._refile()

    def _refile(self) -> None:
        """A call into the compiled module failed: the reports it was to
        make are lost, and with them maybe a deadline it took off the heap;
        file every lane's again."""
        try:
            self.deadlines.refile(self.table)
        except Exception:
            log.failure("the compiled lanes could not file their deadlines again")

    def away(self) -> None:
        """The poller goes back to the reactor: one timer for the earliest deadline."""
        self.reading = False
        if not self.deadlines:
            return
        due = self.deadlines.next
        alarm, delay = self._alarm, max(0.0, due - self.timers.seconds())
        if alarm is None or not alarm.active():
            self._alarm = self.timers.callLater(delay, self._ring)
        elif alarm.getTime() > due:
            alarm.reset(delay)

    def _ring(self) -> None:
        self._alarm = None
        self.look()
        self.away()

    @property
    def can_park(self) -> bool:
        return self._park is not None and bool(self.table)

    def park(self) -> tuple[list[tuple[int, int]], bool]:
        """Sleep until the next datagram, serving the lanes' meanwhile,
        instead of going back to the reactor for it; the events Python must
        serve, and whether there was anything (else the reactor has work, or
        a timer is due)."""
        park = self._park
        if park is None or getattr(self.reactor, "_stopped", False):
            return [], False  # no parking, or stop() was called: the reactor must get on with it
        timeout = self._reactor_timeout()
        if timeout is not None and timeout <= 0:
            return [], False  # a timer is due: only the reactor can run it
        limit = PARK if getattr(self.reactor, "running", False) else PARK_ITERATE
        try:
            rest, later, served = park(self._ep.fileno(), self._reactor_ep.fileno(), self.table, _lane_failed,
                                       limit if timeout is None else min(timeout, limit), self.deadlines,
                                       self.timers.seconds, self.quick)
        except OSError:
            # The reactor's epoll could not be changed (or changed back):
            # no more parking, and the poller back among its readers.
            log.failure("the session poller cannot park; it no longer will")
            self._park = None
            try:
                self._reactor_ep.register(self._ep.fileno(), select.EPOLLIN)
            except FileExistsError:
                pass
            except OSError:
                log.failure("the session poller could not go back among the reactor's readers")
            self._refile()
            return [], False
        except Exception:
            self._failed()
            return [], False
        _run(later)
        return rest, bool(rest or later or served)

    def _reactor_timeout(self) -> float | None:
        """How long the reactor may wait, less the alarm set while the
        poller was away: the park keeps the deadlines itself, and Twisted's
        ``timeout()`` counts a cancelled call until it is due."""
        alarm, self._alarm = self._alarm, None
        if alarm is not None and alarm.active():
            alarm.cancel()
            if self.timers is cast(IReactorTime, self.reactor):  # else the reactor never counted it
                self._cancelled = max(self._cancelled, alarm.getTime())
        if self._cancelled:
            reactor = cast(IReactorTime, self.reactor)
            now = reactor.seconds()
            if self._cancelled > now:
                calls = reactor.getDelayedCalls()
                return max(0.0, min(c.getTime() for c in calls) - now) if calls else None
            self._cancelled = 0.0
        return self._timeout()

    def drain(self, fd: int, limit: int) -> bool:
        """Serve what already waits on ``fd`` in its lane, if it has one;
        whether it has."""
        table = self.table
        lane = table.get(fd)
        if lane is None:
            return False
        take = lane.drain
        # In order: a datagram handed back is taken before the ones behind it.
        while limit > 0 and table.get(fd) is lane:
            try:
                later, read, more = take(limit, _lane_failed)
            except Exception:
                self._failed()
                return True
            _run(later)
            if not more:
                break
            limit -= read
        return True

    def shutdown(self) -> None:
        if self._alarm is not None and self._alarm.active():
            self._alarm.cancel()
        self._alarm = None
        for fd in list(self.table):
            self.close(fd)


def _lane_failed(exc: BaseException, session: Any) -> None:
    """A lane's failure; with its session when the lane could not write its
    copy of the transfer's state back whole (that session must end)."""
    log.failure("error in a compiled lane", Failure(exc))
    if session is not None:
        session.lane_failed(Failure(exc))


def _run(later: list[tuple[Callable[[Any, Any], object], Any, Any]]) -> None:
    """Make the calls a lane left to Python: a datagram handed back, a
    deadline to keep or one that has come."""
    for call, a, b in later:
        try:
            call(a, b)
        except Exception:
            log.failure("error handling a datagram")
