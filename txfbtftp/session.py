"""The TFTP session state machines, sans I/O.

Rules this module keeps (change them only knowingly):

1. No I/O and no clock.  Every entry point takes ``now``; packets leave
   through the ``send`` callable given at construction; ``deadline`` (an
   absolute time, or None) says when the driver must call ``timeout(now)``.
   Received payloads leave through ``deliver`` (uploads only).
2. One peer.  The driver hands a machine only datagrams from the session's
   client address and port; strangers are the driver's business (ERROR 5).
3. Never answer an ERROR.  A peer's ERROR ends the session at once.  ERROR 8
   while our OACK is outstanding is the UEFI "tsize probe" and is flagged.
4. Duplicate ACKs never cause retransmission (the Sorcerer's Apprentice
   bug).  With a window, the first ACK of the window base after a burst is a
   gap report and restarts the window once; later copies are ignored.
5. Only the watchdog gives up.  A late packet is welcome until the schedule's
   patience runs out; after ``finished`` no input changes anything.
6. Block numbers are 16-bit on the wire and unbounded inside: ``wire()`` maps
   an index to its number (wrapping to the ``rollover`` value), and
   ``block_offset()`` maps a number back near a known index.

Theory of operation.  A :class:`ReadMachine` sends a file: after ``start``
(which sends the OACK, or nothing) the driver asks ``wants`` and calls
``feed`` with one block of payload per wanted block (``feed`` answers how
many more fit), so a synchronous reader fills a whole window in one reactor
turn without a Deferred.  Sent packets
are kept until acknowledged; an ACK for block n drops those up to n and the
window restarts at n+1 (RFC 7440).  A :class:`WriteMachine` receives a file:
it ACKs every ``windowsize`` in-order blocks, the last block, and a gap (once
per gap), hands in-order payloads to ``deliver``, sets ``complete`` after the
last block, and sends the final ACK only when the driver calls ``committed``
(the writer made the file visible).  It then dallies to re-ACK a repeated
last block.  On a timeout the receiver repeats an ACK of its last in-order
block.  Every wait comes from the :class:`txfbtftp.schedule.Watchdog`: the
operator's patient schedule for the first packet, the measured round trip
after it.  ``outcome`` and the counters form the session's record.
"""
from __future__ import annotations

import enum
from typing import Callable, List, Optional

from txfbtftp import packet
from txfbtftp.packet import ACK_PACKETS, DATA_HEADERS, ERROR
from txfbtftp.schedule import Watchdog

Send = Callable[[bytes], None]


class State(enum.Enum):
    STARTING = "starting"
    TRANSFER = "transfer"
    COMMITTING = "committing"
    DALLYING = "dallying"
    DONE = "done"


class Outcome(str, enum.Enum):
    OK = "ok"
    CLIENT_ERROR = "client-error"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server-error"


def wire(index: int, rollover: int = 0) -> int:
    """The 16-bit block number of block ``index``."""
    if index <= 0xFFFF:
        return index
    return rollover + (index - 0x10000) % (0x10000 - rollover)


def block_offset(number: int, index: int, rollover: int = 0) -> Optional[int]:
    """How far wire block ``number`` is from block ``index`` (signed, small)."""
    if rollover == 0:
        d = (number - index) & 0xFFFF
    elif index == 0:
        return number
    elif number == 0:
        return None
    else:
        d = (number - wire(index, rollover)) % 0xFFFF
        return d - 0xFFFF if d >= 0x8000 else d
    return d - 0x10000 if d >= 0x8000 else d


class _Machine:
    """What both directions share: state, outcome, counters, the watchdog."""

    def __init__(self, send: Send, watchdog: Watchdog, blksize: int, windowsize: int,
                 rollover: int, oack: Optional[bytes]) -> None:
        self._send = send
        self.watchdog = watchdog
        self.blksize = blksize
        self.windowsize = windowsize
        self.rollover = rollover
        self.oack = oack
        self.state = State.STARTING
        self.deadline: Optional[float] = None
        self.outcome: Optional[Outcome] = None
        self.error_code: Optional[int] = None
        self.error_message = ""
        self.tsize_probe = False
        #: The peer has answered our first packet: a repeated request is no
        #: longer a retransmission.
        self.established = False
        # The record's counters.
        self.bytes = 0
        self.bytes_sent = 0
        self.packets_sent = 0
        self.packets_received = 0
        self.retransmits = 0
        self.duplicates = 0
        self.first_reply_at: Optional[float] = None

    @property
    def finished(self) -> bool:
        return self.state is State.DONE

    def _emit(self, pkt: bytes) -> None:
        self.packets_sent += 1
        self._send(pkt)

    def _finish(self, outcome: Outcome, code: Optional[int] = None, message: str = "") -> None:
        self.state = State.DONE
        self.deadline = None
        if self.outcome is None:
            self.outcome, self.error_code, self.error_message = outcome, code, message

    def fail(self, code: int, message: str) -> None:
        """End the session with an ERROR of ours (a backend or local failure)."""
        if self.state is State.DONE:
            return
        self._emit(packet.error(code, message))
        self._finish(Outcome.SERVER_ERROR, code, message)

    def abandon(self, message: str = "abandoned") -> None:
        """End silently: the client has gone or started over."""
        if self.state is not State.DONE:
            self._finish(Outcome.CLIENT_ERROR, None, message)

    def _peer_error(self, data: bytes) -> None:
        try:
            err = packet.parse_error(data)
            code, msg = err.code, err.message
        except packet.MalformedPacket:
            code, msg = packet.ERR_UNDEFINED, ""
        if code == packet.ERR_OPTIONS and self.state is State.STARTING and self.oack is not None:
            self.tsize_probe = True
        self._finish(Outcome.CLIENT_ERROR, code, msg)

    def _illegal(self, why: str) -> None:
        self._emit(packet.error(packet.ERR_ILLEGAL, packet.MESSAGES[packet.ERR_ILLEGAL]))
        self._finish(Outcome.SERVER_ERROR, packet.ERR_ILLEGAL, why)

    def _give_up(self) -> None:
        self._finish(Outcome.TIMEOUT, None, "timed out after %d retransmissions" % self.retransmits)


class ReadMachine(_Machine):
    """Serves an RRQ: sends DATA, expects ACKs."""

    def __init__(self, send: Send, watchdog: Watchdog, blksize: int = 512, windowsize: int = 1,
                 rollover: int = 0, oack: Optional[bytes] = None) -> None:
        super().__init__(send, watchdog, blksize, windowsize, rollover, oack)
        self._acked = 0            # highest block index acknowledged
        self._sent = 0             # highest block index sent
        self._window: List[bytes] = []   # packets _acked+1 .. _sent
        self._last: Optional[int] = None  # index of the short final block, once read
        self._burst_at = 0.0
        self._clean = True         # nothing in the current burst was resent (Karn)
        self._restart_armed = False

    def start(self, now: float) -> None:
        if self.oack is not None:
            self._emit(self.oack)
            self.deadline = now + self.watchdog.progress(now)
        else:
            self.state = State.TRANSFER
            self.watchdog.progress(now)

    @property
    def wants(self) -> int:
        """How many more blocks ``feed`` can take now."""
        if self.state is not State.TRANSFER or self._last is not None:
            return 0
        return self.windowsize - (self._sent - self._acked)

    def feed(self, payload: bytes, now: float) -> int:
        """Queue and send the next block (a short one is the last); return
        how many more the window can take now, like :attr:`wants`."""
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
        self._send(pkt)
        if self._last is not None:
            return 0
        return self.windowsize - (idx - self._acked)

    def receive(self, data: bytes, now: float) -> None:
        if self.state is State.DONE:
            return
        self.packets_received += 1
        if self.first_reply_at is None:
            self.first_reply_at = now
        if len(data) >= 4 and data[0] == 0 and data[1] == 4:  # some clients pad their ACKs
            self._ack((data[2] << 8) | data[3], now)
        elif len(data) >= 2 and data[0] == 0 and data[1] == ERROR:
            self._peer_error(data)
        else:
            self._illegal("unexpected packet from the client")

    def _ack(self, number: int, now: float) -> None:
        acked = self._acked
        if self.rollover == 0:
            off: Optional[int] = (number - acked) & 0xFFFF
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
            if self.windowsize > 1 and self._restart_armed and self._window:
                self._restart_armed = False
                self._resend(now)
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
            self._resend(now)
            self.deadline = now + self.watchdog.progress(now)
        else:
            self.deadline = None  # the next feed starts a burst, and the timer

    def _resend(self, now: float) -> None:
        self._burst_at = now
        self._clean = False
        for pkt in self._window:
            self.retransmits += 1
            self.bytes_sent += len(pkt) - 4
            self._emit(pkt)

    def timeout(self, now: float) -> None:
        if self.state is State.DONE or self.deadline is None or now < self.deadline:
            return
        wait = self.watchdog.expired(now)
        if wait is None:
            self._give_up()
            return
        self.deadline = now + wait
        if self.state is State.STARTING:
            self.retransmits += 1
            self._emit(self.oack)  # type: ignore[arg-type]
        else:
            self._restart_armed = True
            self._resend(now)


class WriteMachine(_Machine):
    """Serves a WRQ: expects DATA, sends ACKs."""

    def __init__(self, send: Send, watchdog: Watchdog, deliver: Callable[[bytes], None],
                 blksize: int = 512, windowsize: int = 1, rollover: int = 0,
                 oack: Optional[bytes] = None, max_size: Optional[int] = None,
                 dally: float = 5.0) -> None:
        super().__init__(send, watchdog, blksize, windowsize, rollover, oack)
        self._deliver = deliver
        self.max_size = max_size
        self.dally = dally
        self.complete = False
        self._expected = 1        # next in-order block index
        self._unacked = 0         # in-order blocks since our last ACK
        self._gap_acked = False
        self._last_ack = ACK_PACKETS[0]

    def start(self, now: float) -> None:
        self._last_ack = self.oack if self.oack is not None else ACK_PACKETS[0]
        self._emit(self._last_ack)
        self.deadline = now + self.watchdog.progress(now)

    def _send_ack(self, index: int) -> None:
        self._last_ack = ACK_PACKETS[wire(index, self.rollover)]
        self._unacked = 0
        self._emit(self._last_ack)

    def receive(self, data: bytes, now: float) -> None:
        if self.state is State.DONE:
            return
        self.packets_received += 1
        if self.first_reply_at is None:
            self.first_reply_at = now
        if len(data) >= 4 and data[0] == 0 and data[1] == 3:
            self._data((data[2] << 8) | data[3], data, now)
        elif len(data) >= 2 and data[0] == 0 and data[1] == ERROR:
            self._peer_error(data)
        elif self.state is not State.DALLYING:  # the upload already succeeded
            self._illegal("unexpected packet from the client")

    def _data(self, number: int, data: bytes, now: float) -> None:
        expected = self._expected
        off = block_offset(number, expected, self.rollover)
        if off is None:
            self.duplicates += 1
            return
        if off < 0:
            self.duplicates += 1
            if off == -1 and self.state is not State.COMMITTING:
                self.retransmits += 1
                self._reack()
            return
        if self.state is not State.TRANSFER and self.state is not State.STARTING:
            return
        if off > 0:
            if not self._gap_acked:
                self._gap_acked = True
                self._send_ack(expected - 1)
            return
        n = len(data) - 4
        if n > self.blksize:
            self._illegal("DATA larger than the block size")
            return
        if self.max_size is not None and self.bytes + n > self.max_size:
            self.fail(packet.ERR_DISK_FULL, "File too large")
            return
        self.state = State.TRANSFER
        self.established = True
        self._gap_acked = False
        self._expected = expected + 1
        self._unacked += 1
        self.bytes += n
        self._deliver(data[4:])
        if self.state is State.DONE:
            return
        self.deadline = now + self.watchdog.progress(now)
        if n < self.blksize:
            self.complete = True
            self.state = State.COMMITTING
            self.deadline = None
        elif self._unacked >= self.windowsize:
            self._send_ack(expected)

    def committed(self, now: float) -> None:
        """The writer has made the upload visible: send the final ACK and dally."""
        if self.state is not State.COMMITTING:
            return
        self._send_ack(self._expected - 1)
        self.outcome = Outcome.OK
        self.state = State.DALLYING
        self.deadline = now + self.dally

    def timeout(self, now: float) -> None:
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
        self.retransmits += 1
        self._reack()

    def _reack(self) -> None:
        """Repeat our last word: the OACK (or ACK 0) until data flows, then an
        ACK of the last in-order block, so the sender resumes right after it."""
        if self._expected > 1:
            self._send_ack(self._expected - 1)
        else:
            self._emit(self._last_ack)
