"""Session sockets behind one poller.

Every session has its own socket (a new transfer ID, as RFC 1350 wants), and
in lock-step each block is one wake-up.  Letting the reactor dispatch each
socket costs more Python than the transfer itself, so all session sockets
sit behind one inner epoll that the reactor sees as a single reader.  When
traffic is flowing it keeps polling for a short while before handing control
back, so the next ACK of a fast client is read without a round trip through
the reactor and without the latency of waking a sleeping process.  How long
is learnt (:class:`Spin`): up to ``busy_poll``, and not at all while the
clients answer slower than that.  A spin pays for itself in CPU only when
it is shorter than the sleep and wake-up it saves, a few microseconds, so
that is the default: under load the next datagram is that close, while a
lock-step client, even on loopback, answers later; a longer ``busy_poll``
buys such a client's throughput with CPU.  ``time_slice`` bounds how long other
events can wait.  The listening ports are served from inside the same loop,
so new requests are not kept waiting while sessions stream: when thousands
of session sockets are ready at once (a boot storm), a listening port's turn
in the ready list would come once per round of all of them, later than the
clients' patience for a first reply; events are taken ``BATCH`` at a time,
and after every full batch the listening ports are read first.

Where the optional compiled module is built, established downloads have
compiled *lanes* (:mod:`txfbtftp._net.lanes`), which serve their ACKs
without running Python, keep their deadlines, and let the poller sleep in
the compiled module instead of the reactor between datagrams.  Setting
``TXFBTFTP_PURE_PYTHON`` in the environment turns them off.
"""
from __future__ import annotations

import errno
import os
import select
import socket
import time
from typing import Any
from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IReactorFDSet, IReactorTime, IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from txfbtftp._net.batch import BatchSender
from txfbtftp._net.lanes import Handler, Lanes
from txfbtftp._net.listener import MAX_DATAGRAM
from txfbtftp._observe.logs import LogLimiter, log

_speedups: Any
try:
    if os.environ.get("TXFBTFTP_PURE_PYTHON"):
        raise ImportError("pure Python asked for")
    import txfbtftp._speedups as _speedups
except ImportError:
    _speedups = None
#: The compiled lane's type, or None where there is none.
Lane: Any = _speedups and _speedups.Lane

#: Events taken per look: ready sockets served between two looks at the
#: listening ports, under load.  (Without a bound, each look would also
#: allocate room for 1023, which costs more than the system call on an idle
#: spin.)
BATCH = 64


class Spin:
    """How long to keep polling after traffic, learnt from the clients' pace.

    A spin that catches the next datagram saves a trip through the reactor;
    one that comes up empty burns CPU for nothing.  When the poller wakes
    (from the reactor, or a park that a quick datagram ended), the time
    since the last datagram says whether a spin of ``ceiling`` would have
    caught this one: if so the budget doubles (from
    an eighth of ``ceiling``, up to it), else it halves, and below that
    eighth it is none.  A lock-step client across a WAN then costs a few
    wasted spins, not one per block, and a fast one gets its spin back
    within a few blocks.
    """

    __slots__ = ("ceiling", "floor", "budget", "_idle_since")

    def __init__(self, ceiling: float) -> None:
        self.ceiling = ceiling
        self.floor = ceiling / 8
        #: Seconds to keep polling after the last datagram, now.
        self.budget = ceiling
        self._idle_since: float | None = None

    def idle(self, since: float) -> None:
        """The poller went back to the reactor for want of datagrams, the
        last one read at ``since``."""
        self._idle_since = since

    def woke(self, now: float) -> None:
        """The reactor found datagrams waiting at ``now``."""
        since = self._idle_since
        if since is None:
            return  # the poller had left only to let other events run
        self._idle_since = None
        if now - since <= self.ceiling:
            self.budget = min(self.ceiling, max(self.floor, 2 * self.budget))
        else:
            budget = self.budget / 2
            self.budget = budget if budget >= self.floor else 0.0


@implementer(IReadDescriptor)
class SessionSockets:
    """Session sockets multiplexed behind one reactor reader (Linux epoll)."""

    def __init__(self, reactor: IReactorFDSet, busy_poll: float = 0.000005, time_slice: float = 0.005,
                 clock: Callable[[], float] = time.monotonic, timers: IReactorTime | None = None) -> None:
        self.reactor = reactor
        #: The sessions' clock, on which the lanes' deadlines are kept (the reactor's, unless given).
        self.timers: IReactorTime = timers if timers is not None else reactor  # type: ignore[assignment]
        #: How long to keep polling after traffic, at most ``busy_poll``.
        self.spin = Spin(busy_poll)
        self.time_slice = time_slice
        self._clock = clock
        #: How this poller's sockets send a window.
        self.sender = BatchSender()
        self._ep = select.epoll()
        self._handlers: dict[int, tuple[socket.socket | None, Callable[..., object]]] = {}
        #: The listening ports' readers, by descriptor.
        self._listeners: dict[int, Callable[[], object]] = {}
        #: Unexpected errors of the loop: logged, at most once a minute.
        self._failures = LogLimiter(clock)
        #: The compiled lanes, where the module is built.
        self.lanes = (Lanes(_speedups, reactor, self.timers, self._ep, self.sender, busy_poll)
                      if Lane is not None else None)
        reactor.addReader(self)

    def watch(self, reader: IReadDescriptor) -> None:
        """Also serve ``reader`` (a listening port) from inside the loop."""
        fd = reader.fileno()
        self._handlers[fd] = (None, reader.doRead)
        self._listeners[fd] = reader.doRead
        self._ep.register(fd, select.EPOLLIN)

    def unwatch(self, reader: IReadDescriptor) -> None:
        fd = reader.fileno()
        self._listeners.pop(fd, None)
        if self._handlers.pop(fd, None) is not None:
            self._ep.unregister(fd)

    def bind(self, family: int, host: str, ports: Iterable[int], scope_id: int = 0) -> socket.socket:
        """A non-blocking socket bound to ``host`` and the first free of ``ports``.

        Raises OSError (EADDRINUSE when every port was taken).
        """
        err: OSError | None = None
        for port in ports:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind((host, port, 0, scope_id) if family == socket.AF_INET6 else (host, port))
            except OSError as e:
                sock.close()
                if e.errno != errno.EADDRINUSE:
                    raise
                err = e
                continue
            return sock
        raise err or OSError(errno.EADDRINUSE, "no free port")

    def register(self, sock: socket.socket, handler: Handler) -> None:
        """Call ``handler(data, addr)`` for each datagram ``sock`` receives."""
        fd = sock.fileno()
        try:
            self._ep.register(fd, select.EPOLLIN)
        except (OSError, ValueError):
            sock.close()
            raise
        self._handlers[fd] = (sock, handler)

    def open_lane(self, sock: socket.socket, session: Any, machine: Any, reader: Any, dest: tuple[Any, ...],
                  handler: Handler) -> bool:
        """Serve ``sock``'s whole-window ACKs in a compiled lane (see
        :mod:`txfbtftp._speedups`), where the module is built and takes the
        transfer; else ``handler`` keeps serving every datagram.  Whether it
        does: if so the poller keeps the session's deadline from now on
        (``session.deadline_came(machine, now)``, once it is told of it by
        :meth:`keep_deadline`)."""
        return self.lanes is not None and self.lanes.open(sock, session, machine, reader, dest, handler)

    def keep_deadline(self, sock: socket.socket, deadline: float) -> None:
        """The session of ``sock``'s lane has its deadline at ``deadline`` now."""
        if self.lanes is not None:
            self.lanes.keep(sock.fileno(), deadline)

    def close(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if self.lanes is not None:
            self.lanes.close(fd)
        if fd >= 0 and self._handlers.pop(fd, None) is not None:
            self._ep.unregister(fd)
        sock.close()

    def fileno(self) -> int:
        return self._ep.fileno()

    def logPrefix(self) -> str:
        return "txfbtftp-sessions"

    def doRead(self) -> None:
        lanes = self.lanes
        if lanes is not None:
            lanes.reading = True
        try:
            self._read(lanes)
        except Exception:
            # Raised to the reactor, it would disconnect the poller, and
            # every session with it.
            if self._failures.allow("poller"):
                log.failure("error in the session poller (logged once a minute)")
        finally:
            if lanes is not None:
                lanes.away()

    def _read(self, lanes: Lanes | None) -> None:
        poll = self._ep.poll
        clock = self._clock
        spin = self.spin
        start = last = clock()
        spin.woke(start)
        end = start + self.time_slice
        idle = spin.budget
        while True:
            events = poll(0, BATCH)
            if events:
                self._serve(events)
                if len(events) == BATCH and self._listeners:
                    self._listen()
                last = now = clock()
            else:
                now = clock()
                if now - last >= idle:
                    spin.idle(last)
                    if lanes is None or not lanes.can_park:
                        return
                    rest, woke = lanes.park()
                    if not woke:
                        return
                    if rest:
                        self._handle(rest)  # what the park left: no lane's
                    last = now = clock()
                    spin.woke(now)
                    end = now + self.time_slice
                    idle = spin.budget
            if lanes is not None:
                lanes.look()
            if now >= end:
                return

    def _serve(self, events: list[tuple[int, int]]) -> None:
        """Read and handle a datagram for each of ``events``."""
        if self.lanes is not None and self.lanes.table:
            events = self.lanes.serve(events)
        self._handle(events)

    def _handle(self, events: list[tuple[int, int]]) -> None:
        """The same, for descriptors without a lane."""
        handlers = self._handlers
        for fd, _ in events:
            entry = handlers.get(fd)
            if entry is None:
                continue
            sock = entry[0]
            if sock is None:
                try:
                    entry[1]()  # a listening port
                except Exception:
                    log.failure("error reading a listening port")
                continue
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except OSError:
                continue  # EAGAIN, or an ICMP error queued on the socket
            try:
                entry[1](data, addr)
            except Exception:
                log.failure("error handling a datagram from {addr!r}", addr=addr)

    def drain(self, sock: socket.socket, limit: int) -> bool:
        """Serve what already waits on ``sock`` in its lane, if it has one;
        whether it has."""
        return self.lanes is not None and self.lanes.drain(sock.fileno(), limit)

    def _listen(self) -> None:
        """Serve the listening ports ahead of the session sockets still ready."""
        for read in list(self._listeners.values()):
            try:
                read()
            except Exception:
                log.failure("error reading a listening port")

    def connectionLost(self, reason: Failure) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        self.reactor.removeReader(self)
        if self.lanes is not None:
            self.lanes.shutdown()
        for sock, _ in list(self._handlers.values()):
            if sock is not None:
                self.close(sock)
        self._handlers.clear()
        self._listeners.clear()
        self._ep.close()
