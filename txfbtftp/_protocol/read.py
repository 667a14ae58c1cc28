"""The sending half of TFTP: a :class:`ReadMachine` serves an RRQ.

After :meth:`~ReadMachine.start` (the OACK, or nothing) the driver asks
:attr:`~ReadMachine.wants` and calls :meth:`~ReadMachine.feed` with one
block of payload per wanted block (``feed`` answers how many more fit), so a
synchronous reader fills a whole window in one step without a Deferred.
Sent packets are kept until acknowledged; an ACK for block n drops those up
to n, and the window restarts at n+1 (RFC 7440).  The rules are those of
:mod:`txfbtftp._protocol.machine`.
"""
from __future__ import annotations


from txfbtftp._protocol.machine import Machine, Outbox, Outcome, State, block_offset, wire
from txfbtftp._protocol.packet import DATA_HEADERS, ERROR
from txfbtftp._protocol.schedule import Watchdog


class ReadMachine(Machine):
    """Sends DATA, expects ACKs."""

    def __init__(self, watchdog: Watchdog, blksize: int = 512, windowsize: int = 1, rollover: int = 0,
                 oack: bytes | None = None, quiet_until_verified: bool = False) -> None:
        super().__init__(watchdog, blksize, windowsize, rollover, oack, quiet_until_verified)
        self._acked = 0            # highest block index acknowledged
        self._sent = 0             # highest block index sent
        self._window: list[bytes] = []   # packets _acked+1 .. _sent
        self._last: int | None = None  # index of the short final block, once read
        self._burst_at = 0.0
        self._clean = True         # nothing in the current burst was resent (Karn)
        self._restart_armed = False

    def start(self, now: float, out: Outbox) -> None:
        if self.oack is not None:
            self._emit(self.oack, out)
            self.deadline = now + self.watchdog.progress(now)
        else:
            self.state = State.TRANSFER
            self.watchdog.progress(now)

    @property
    def verified(self) -> bool:
        return self._acked > 0

    def repeat(self, now: float, out: Outbox) -> None:
        if self._acked:
            return
        if self.state is State.STARTING and self.oack is not None:
            self.retransmits += 1
            self._emit(self.oack, out)
        elif self.state is State.TRANSFER and self._window:
            self._resend(now, out)

    @property
    def wants(self) -> int:
        """How many more blocks ``feed`` can take now."""
        if self.state is not State.TRANSFER or self._last is not None:
            return 0
        return self.windowsize - (self._sent - self._acked)

    def feed(self, payload: bytes, now: float, out: Outbox) -> int:
        """Send the next block (a short one is the last); return how many
        more the window can take now, like :attr:`wants`."""
        idx = self._sent + 1
        self._sent = idx
        if idx <= 0xFFFF:
            pkt = DATA_HEADERS[idx] + payload
        else:
            pkt = DATA_HEADERS[wire(idx, self.rollover)] + payload
        if len(payload) < self.blksize:
            self._last = idx
        if not self._window:
            self._burst_at = now
            self._clean = True
            self._restart_armed = True
            self.deadline = now + self.watchdog.progress(now)
        self._window.append(pkt)
        self.bytes += len(payload)
        self.bytes_sent += len(payload)
        self.packets_sent += 1
        out.append(pkt)
        if self._last is not None:
            return 0
        return self.windowsize - (idx - self._acked)

    def receive(self, data: bytes, now: float, out: Outbox) -> None:
        if self.state is State.DONE:
            return
        self._heard(now)
        if len(data) >= 4 and data[0] == 0 and data[1] == 4:  # some clients pad their ACKs
            self._ack((data[2] << 8) | data[3], now, out)
        elif len(data) >= 2 and data[0] == 0 and data[1] == ERROR:
            self._peer_error(data)
        else:
            self._illegal("unexpected packet from the client", out)

    def _ack(self, number: int, now: float, out: Outbox) -> None:
        acked = self._acked
        if self.rollover == 0:
            off: int | None = (number - acked) & 0xFFFF
        else:
            off = block_offset(number, acked, self.rollover)
        if off is None or off < 0 or off > self._sent - acked:
            self.duplicates += 1
            return
        self.established = True
        if self.state is State.STARTING:
            self.state = State.TRANSFER
            self.deadline = None
            self.watchdog.progress(now)
            return
        if off == 0:
            self.duplicates += 1
            if acked == 0 and self.quiet_until_verified and self._window:
                self._resend(now, out)  # the peer's own repeat: its answer (rule 8)
            elif self.windowsize > 1 and self._restart_armed and self._window:
                self._restart_armed = False
                self._resend(now, out)
                self.deadline = now + self.watchdog.progress(now)
            return
        # Karn: time only clean bursts; without an OACK the first ACK also
        # measures the client's start-up, which is no round trip.
        if self._clean and self.watchdog.estimator is not None and (acked or self.oack is not None):
            self.watchdog.estimator.sample(now - self._burst_at)
        self._acked = acked + off
        del self._window[:off]
        if self._last is not None and self._acked == self._last:
            self._finish(Outcome.OK)
            return
        self._restart_armed = True
        if self._window:
            self._resend(now, out)
            self.deadline = now + self.watchdog.progress(now)
        else:
            self.deadline = None  # the next feed starts a burst, and the timer

    def _resend(self, now: float, out: Outbox) -> None:
        self._burst_at = now
        self._clean = False
        for pkt in self._window:
            self.retransmits += 1
            self.bytes_sent += len(pkt) - 4
            self._emit(pkt, out)

    def timeout(self, now: float, out: Outbox) -> None:
        if self.state is State.DONE or self.deadline is None or now < self.deadline:
            return
        wait = self.watchdog.expired(now)
        if wait is None:
            self._give_up()
            return
        self.deadline = now + wait
        if self.quiet_until_verified and not self._acked:
            return  # patience, but no resend: the peer's repeat gets one (rule 8)
        if self.state is State.STARTING and self.oack is not None:
            self.retransmits += 1
            self._emit(self.oack, out)
        else:
            self._restart_armed = True
            self._resend(now, out)
