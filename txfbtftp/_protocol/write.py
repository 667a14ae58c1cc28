"""The receiving half of TFTP: a :class:`WriteMachine` serves a WRQ.

It ACKs every ``windowsize`` in-order blocks, the last block, and a gap
(once per gap).  :meth:`~WriteMachine.receive` returns each in-order payload
for the driver to store, sets ``complete`` after the last block, and the
final ACK goes out only when the driver calls
:meth:`~WriteMachine.committed` (the upload is visible).  The machine then
dallies to re-ACK a repeated last block.  On a timeout it repeats an ACK of
its last in-order block, so the sender resumes right after it.  The rules
are those of :mod:`txfbtftp._protocol.machine`.
"""
from __future__ import annotations


from txfbtftp._protocol import packet
from txfbtftp._protocol.machine import Machine, Outbox, Outcome, State, block_offset, wire
from txfbtftp._protocol.packet import ACK_PACKETS, ERROR
from txfbtftp._protocol.schedule import Watchdog


class WriteMachine(Machine):
    """Expects DATA, sends ACKs."""

    def __init__(self, watchdog: Watchdog, blksize: int = 512, windowsize: int = 1, rollover: int = 0,
                 oack: bytes | None = None, max_size: int | None = None, dally: float = 5.0,
                 quiet_until_verified: bool = False) -> None:
        super().__init__(watchdog, blksize, windowsize, rollover, oack, quiet_until_verified)
        self.max_size = max_size
        self.dally = dally
        self.complete = False
        self._expected = 1        # next in-order block index
        self._unacked = 0         # in-order blocks since our last ACK
        self._gap_acked = False
        self._last_ack = ACK_PACKETS[0]

    def start(self, now: float, out: Outbox) -> None:
        self._last_ack = self.oack if self.oack is not None else ACK_PACKETS[0]
        self._emit(self._last_ack, out)
        self.deadline = now + self.watchdog.progress(now)

    @property
    def verified(self) -> bool:
        return self._expected > 1

    def repeat(self, now: float, out: Outbox) -> None:
        if self.state is State.STARTING and self._expected == 1:
            self.retransmits += 1
            self._emit(self._last_ack, out)

    def _send_ack(self, index: int, out: Outbox) -> None:
        self._last_ack = ACK_PACKETS[wire(index, self.rollover)]
        self._unacked = 0
        self._emit(self._last_ack, out)

    def receive(self, data: bytes, now: float, out: Outbox) -> bytes | None:
        """Take a packet; return the payload to store, if it brought one in order."""
        if self.state is State.DONE:
            return None
        self._heard(now)
        if len(data) >= 4 and data[0] == 0 and data[1] == 3:
            return self._data((data[2] << 8) | data[3], data, now, out)
        if len(data) >= 2 and data[0] == 0 and data[1] == ERROR:
            self._peer_error(data)
        elif self.state is not State.DALLYING:  # the upload already succeeded
            self._illegal("unexpected packet from the client", out)
        return None

    def _data(self, number: int, data: bytes, now: float, out: Outbox) -> bytes | None:
        expected = self._expected
        off = block_offset(number, expected, self.rollover)
        if off is None:
            self.duplicates += 1
            return None
        if off < 0:
            self.duplicates += 1
            if off == -1 and self.state is not State.COMMITTING:
                self.retransmits += 1
                self._reack(out)
            return None
        if self.state is not State.TRANSFER and self.state is not State.STARTING:
            return None
        if off > 0:
            if not self._gap_acked:
                self._gap_acked = True
                self._send_ack(expected - 1, out)
            return None
        n = len(data) - 4
        if n > self.blksize:
            self._illegal("DATA larger than the block size", out)
            return None
        if self.max_size is not None and self.bytes + n > self.max_size:
            self.fail(packet.ERR_DISK_FULL, "File too large", out)
            return None
        self.state = State.TRANSFER
        self.established = True
        self._gap_acked = False
        self._expected = expected + 1
        self._unacked += 1
        self.bytes += n
        self.deadline = now + self.watchdog.progress(now)
        if n < self.blksize:
            self.complete = True
            self.state = State.COMMITTING
            self.deadline = None
        elif self._unacked >= self.windowsize:
            self._send_ack(expected, out)
        return data[4:]

    def committed(self, now: float, out: Outbox) -> None:
        """The writer has made the upload visible: send the final ACK and dally."""
        if self.state is not State.COMMITTING:
            return
        self._send_ack(self._expected - 1, out)
        self.outcome = Outcome.OK
        self.state = State.DALLYING
        self.deadline = now + self.dally

    def timeout(self, now: float, out: Outbox) -> None:
        if self.state is State.DONE or self.deadline is None or now < self.deadline:
            return
        if self.state is State.DALLYING:
            self._finish(Outcome.OK)
            return
        wait = self.watchdog.expired(now)
        if wait is None:
            self._give_up()
            return
        self.deadline = now + wait
        if self.quiet_until_verified and self._expected == 1:
            return  # patience, but no resend: the peer's repeat gets one (rule 8)
        self.retransmits += 1
        self._reack(out)

    def _reack(self, out: Outbox) -> None:
        """Repeat our last word: the OACK (or ACK 0) until data flows, then an
        ACK of the last in-order block, so the sender resumes right after it."""
        if self._expected > 1:
            self._send_ack(self._expected - 1, out)
        else:
            self._emit(self._last_ack, out)
