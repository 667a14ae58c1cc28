"""Server-wide settings, as one immutable value."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from txfbtftp._protocol.options import Limits
from txfbtftp._protocol.schedule import DEFAULT_SCHEDULE, Schedule


@dataclass(frozen=True)
class ServerConfig:
    """How a server negotiates, retransmits, uses ports and admits requests."""

    limits: Limits = field(default_factory=Limits)
    #: The watchdog: waits before each retransmission of the first packet,
    #: and the bounds of the adaptive timer after it.
    schedule: Schedule = DEFAULT_SCHEDULE
    #: Estimate the round trip after the first exchange (RFC 6298).
    adaptive: bool = True
    #: The adaptive timer's floor, seconds.
    rto_min: float = 0.05
    #: How long an upload's final ACK is repeated for a repeated last block.
    dally: float = 5.0
    #: Session sockets come from this range (inclusive) instead of anywhere.
    port_range: tuple[int, int] | None = None
    #: Serve every session from the listening port (NAT, containers).
    single_port: bool = False
    #: Keep polling session sockets at most this long after the last datagram
    #: before returning to the reactor: less, or not at all, while clients
    #: answer slower than that (0 disables); see txfbtftp._net.poller.  About
    #: what a sleep and a wake-up cost in CPU: a spin that pays for itself.
    busy_poll: float = 0.000005
    #: The longest the session sockets keep the reactor waiting.
    time_slice: float = 0.005
    #: Admission control (txfbtftp._server.admission): active sessions at most (0:
    #: no limit), how many requests may wait for a slot, how many sessions
    #: one client address may have (0: no limit), and how long a queued
    #: client that stopped repeating its request keeps its place.
    max_sessions: int = 0
    max_queue: int = 1024
    max_sessions_per_client: int = 0
    max_queue_wait: float = 30.0
    #: Share the listening port(s) with other processes (SO_REUSEPORT).
    reuse_port: bool = False
    #: When stopping, how long transfers in flight may run to their end
    #: before they are ended with an ERROR.
    shutdown_grace: float = 30.0
    #: Per source address, what peers that have not proved they are there
    #: (txfbtftp._server.buckets) may cost: sessions at once, and bytes a
    #: second sent to them (0: no limit).
    max_unverified_per_source: int = 16
    unverified_bytes_per_second: int = 512 * 1024

    def share(self, index: int, count: int) -> ServerConfig:
        """Process ``index``'s part of the whole server's limits when ``count``
        processes serve its port (``--workers``): the active sessions, the
        queue and the port range are divided among them.  The limits per
        client address stay whole: each address meets one process
        (:mod:`txfbtftp._net.steer`)."""
        if count == 1:
            return self

        def part(total: int) -> int:
            return total // count + (1 if index < total % count else 0)

        ports = self.port_range
        if ports is not None:
            size = ports[1] - ports[0] + 1
            low = ports[0] + index * (size // count) + min(index, size % count)
            ports = (low, low + part(size) - 1)
        return dataclasses.replace(self, max_sessions=part(self.max_sessions), max_queue=part(self.max_queue),
                                   port_range=ports)
