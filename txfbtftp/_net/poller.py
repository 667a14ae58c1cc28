"""Session sockets behind one poller.

Every session has its own socket (a new transfer ID, as RFC 1350 wants), and
in lock-step each block is one wake-up.  Letting the reactor dispatch each
socket costs more Python than the transfer itself, so all session sockets
sit behind one inner epoll that the reactor sees as a single reader.  When
traffic is flowing it keeps polling for a short while before handing control
back, so the next ACK of a fast client is read without a round trip through
the reactor and without the latency of waking a sleeping process.  How long
is learnt (:class:`Spin`): up to ``busy_poll``, and not at all while the
clients answer slower than that.  ``time_slice`` bounds how long other
events can wait.  The listening ports are served from inside the same loop,
so new requests are not kept waiting while sessions stream: when thousands
of session sockets are ready at once (a boot storm), a listening port's turn
in the ready list would come once per round of all of them, later than the
clients' patience for a first reply; events are taken ``BATCH`` at a time,
and after every full batch the listening ports are read first.

Where the optional compiled module is built, an established download's
socket may also have a *lane* (:mod:`txfbtftp._speedups`): the compiled twin
of its DATA hot path, which serves a whole-window ACK without running
Python and hands everything else back to the session's own handler.  Under
the epoll reactor, a poller whose spin ran out then *parks* instead of
going back to the reactor: it sleeps in the compiled module on its own epoll,
with the reactor's moved inside it meanwhile (:func:`txfbtftp._speedups.park`),
serving the lanes' ACKs as they come, until
Python has work (a datagram without a lane, a timer to re-arm, the
reactor's next timer, any of the reactor's own descriptors ready, a
signal).  A lock-step client then costs one wake-up of a few system calls a
block, not a trip through the reactor.  Setting ``TXFBTFTP_PURE_PYTHON`` in
the environment turns lanes and parking off.
"""
from __future__ import annotations

import errno
import os
import select
import socket
import time
from typing import Any
from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from txfbtftp._net.batch import BatchSender
from txfbtftp._net.listener import MAX_DATAGRAM
from txfbtftp._observe.logs import log
from txfbtftp._protocol.machine import State

_speedups: Any
try:
    if os.environ.get("TXFBTFTP_PURE_PYTHON"):
        raise ImportError("pure Python asked for")
    import txfbtftp._speedups as _speedups
except ImportError:
    _speedups = None
#: The compiled lane's type, or None where there is none.
Lane: Any = _speedups and _speedups.Lane

Handler = Callable[[bytes, tuple[Any, ...]], None]
#: Events taken per look: ready sockets served between two looks at the
#: listening ports, under load.  (Without a bound, each look would also
#: allocate room for 1023, which costs more than the system call on an idle
#: spin.)
BATCH = 64
#: The longest sleep between datagrams outside the reactor, in seconds (a
#: ``reactor.iterate()`` may take that long while downloads run).
PARK = 0.1


class Spin:
    """How long to keep polling after traffic, learnt from the clients' pace.

    A spin that catches the next datagram saves a trip through the reactor;
    one that comes up empty burns CPU for nothing.  When the reactor wakes
    the poller, the time since the last datagram says whether a spin of
    ``ceiling`` would have caught this one: if so the budget doubles (from
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

    def __init__(self, reactor: IReactorFDSet, busy_poll: float = 0.0002, time_slice: float = 0.005,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.reactor = reactor
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
        #: The compiled lanes, by descriptor.
        self._lanes: dict[int, Any] = {}
        # Under the epoll reactor, with the compiled module, the poller
        # sleeps in the module between datagrams (:meth:`_park_here`); the
        # reactor's epoll is private, but it is what says when to stop.
        poller = getattr(reactor, "_poller", None)
        timeout = getattr(reactor, "timeout", None)
        self._park: Callable[..., tuple[Any, Any, int]] | None = None
        if _speedups is not None and isinstance(poller, select.epoll) and callable(timeout):
            self._park = _speedups.park
            self._reactor_ep = poller
            self._timeout: Callable[[], float | None] = timeout
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
                  handler: Handler) -> None:
        """Serve ``sock``'s whole-window ACKs in a compiled lane (see
        :mod:`txfbtftp._speedups`), where the module is built and takes the
        transfer; else ``handler`` keeps serving every datagram."""
        fd = sock.fileno()
        if Lane is None or fd < 0:
            return
        try:
            self._lanes[fd] = Lane(session, machine, reader, fd, dest, handler, self.sender, State.TRANSFER)
        except (TypeError, ValueError):
            pass  # a transfer the lane does not take (a window over 256 blocks)

    def close(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        self._lanes.pop(fd, None)
        if fd >= 0 and self._handlers.pop(fd, None) is not None:
            self._ep.unregister(fd)
        sock.close()

    def fileno(self) -> int:
        return self._ep.fileno()

    def logPrefix(self) -> str:
        return "txfbtftp-sessions"

    def doRead(self) -> None:
        poll = self._ep.poll
        clock = self._clock
        spin = self.spin
        park = self._park
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
                    if park is None or not self._lanes or not self._park_here(park):
                        return
                    last = now = clock()
                    spin.woke(now)
                    end = now + self.time_slice
                    idle = spin.budget
            if now >= end:
                return

    def _park_here(self, park: Callable[..., tuple[Any, Any, int]]) -> bool:
        """Sleep until the next datagram, serving the lanes' meanwhile,
        instead of going back to the reactor for it; whether Python had
        datagrams to serve (else the reactor has work, or a timer is due)."""
        if getattr(self.reactor, "_stopped", False):
            return False  # stop() was called meanwhile: the reactor must get on with it
        timeout = self._timeout()
        try:
            rest, later, served = park(self._ep.fileno(), self._reactor_ep.fileno(), self._lanes, _lane_failed,
                                       PARK if timeout is None else min(timeout, PARK))
        except OSError:
            # The reactor's epoll could not be changed (or changed back):
            # no more parking, and the poller back among its readers.
            log.failure("the session poller cannot park; it no longer will")
            self._park = None
            try:
                self._reactor_ep.register(self._ep.fileno(), select.EPOLLIN)
            except FileExistsError:
                pass
            return False
        except Exception:
            log.failure("error in the compiled lanes")
            return False
        _run(later)
        if rest:
            self._serve(rest)
        return bool(rest or later or served)

    def _serve(self, events: list[tuple[int, int]]) -> None:
        """Read and handle a datagram for each of ``events``."""
        handlers = self._handlers
        if self._lanes:
            events = self._serve_lanes(events)
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

    def _serve_lanes(self, events: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Let the lanes serve their sockets' datagrams; the events left."""
        try:
            rest, later = _speedups.serve(events, self._lanes, _lane_failed)
        except Exception:
            # Only a failure to allocate gets here: this batch's datagrams
            # are lost packets, which the sessions' timers resend.
            log.failure("error in the compiled lanes")
            return []
        _run(later)
        return rest

    def drain(self, sock: socket.socket, limit: int) -> bool:
        """Serve what already waits on ``sock`` in its lane, if it has one;
        whether it has."""
        fd = sock.fileno()
        lane = self._lanes.get(fd)
        if lane is None:
            return False
        take = lane.drain
        # In order: a datagram handed back is taken before the ones behind it.
        while limit > 0 and self._lanes.get(fd) is lane:
            try:
                later, read, more = take(limit, _lane_failed)
            except Exception:
                log.failure("error in the compiled lanes")
                return True
            _run(later)
            if not more:
                break
            limit -= read
        return True

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
        for sock, _ in list(self._handlers.values()):
            if sock is not None:
                self.close(sock)
        self._handlers.clear()
        self._listeners.clear()
        self._lanes.clear()
        self._ep.close()


def _lane_failed(exc: BaseException, _: None) -> None:
    log.failure("error in a compiled lane", Failure(exc))


def _run(later: list[tuple[Callable[[Any, Any], object], Any, Any]]) -> None:
    """Make the calls a lane left to Python: a datagram handed back, or a
    timer to re-arm."""
    for call, a, b in later:
        try:
            call(a, b)
        except Exception:
            log.failure("error handling a datagram")
