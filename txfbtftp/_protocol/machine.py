"""What both session machines share, and the rules they keep.

Rules (change them only knowingly):

1. No I/O and no clock.  Every entry point takes ``now``, and the packets a
   step produces are appended to ``out``, a list the driver passes and then
   sends in one batch; a machine never sends, and has no mode that decides
   whether it does.  ``deadline`` (an absolute time, or None) says when the
   driver must call ``timeout(now, out)``.
2. One peer.  The driver hands a machine only datagrams from the session's
   client address and port; strangers are the driver's business (ERROR 5).
3. Never answer an ERROR.  A peer's ERROR ends the session at once.  ERROR 8
   while our OACK is outstanding is the UEFI "tsize probe" and is flagged.
4. Duplicate ACKs never cause retransmission (the Sorcerer's Apprentice
   bug).  With a window, the first ACK of the window base after a burst is a
   gap report and restarts the window once; later copies are ignored.
5. Only the watchdog gives up.  A late packet is welcome until the schedule's
   patience runs out; after ``finished`` no input changes anything.
6. Block numbers are 16-bit on the wire and unbounded inside: :func:`wire`
   maps an index to its number (wrapping to the ``rollover`` value), and
   :func:`block_offset` maps a number back near a known index.
7. An ERROR of ours supersedes what the same step queued: :meth:`fail`
   empties ``out`` before it appends the ERROR.
8. Not a reflector.  With ``quiet_until_verified`` (a server's choice), a
   peer that has not yet proved it is there (a sender's DATA acknowledged, a
   receiver's first DATA received) gets one answer per packet it sent: the
   timer never resends to it, its own repeat (:meth:`repeat`, or a repeated
   ACK 0) does.  Anyone can send a request with a forged source address;
   only the real client completes the exchange.

Theory of operation.  A :class:`~txfbtftp._protocol.read.ReadMachine` sends a
file, a :class:`~txfbtftp._protocol.write.WriteMachine` receives one; each
module's docstring tells its direction.  Every wait comes from the
:class:`~txfbtftp._protocol.schedule.Watchdog`: the operator's patient
schedule for the first packet, the measured round trip after it.
``outcome`` and the counters form the session's record.
"""
from __future__ import annotations

import enum

from txfbtftp._protocol import packet
from txfbtftp._protocol.schedule import Watchdog

#: The packets of one step, in order; the driver sends and clears it.
Outbox = list[bytes]


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
    #: Ended by the server stopping (its driver's word: a machine never says it).
    SHUTDOWN = "server-shutdown"


def wire(index: int, rollover: int = 0) -> int:
    """The 16-bit block number of block ``index``."""
    if index <= 0xFFFF:
        return index
    return rollover + (index - 0x10000) % (0x10000 - rollover)


def block_offset(number: int, index: int, rollover: int = 0) -> int | None:
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


class Machine:
    """State, outcome, counters and the watchdog of one transfer."""

    def __init__(self, watchdog: Watchdog, blksize: int, windowsize: int, rollover: int,
                 oack: bytes | None, quiet_until_verified: bool = False) -> None:
        self.watchdog = watchdog
        self.quiet_until_verified = quiet_until_verified
        self.blksize = blksize
        self.windowsize = windowsize
        self.rollover = rollover
        self.oack = oack
        self.state = State.STARTING
        self.deadline: float | None = None
        self.outcome: Outcome | None = None
        self.error_code: int | None = None
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
        self.first_reply_at: float | None = None
        #: When the peer was last heard from (any packet).
        self.last_heard_at: float | None = None

    def start(self, now: float, out: Outbox) -> None:
        """Send the first packet, if the direction has one to send."""
        raise NotImplementedError

    def receive(self, data: bytes, now: float, out: Outbox) -> bytes | None:
        """A datagram from the peer; an upload's receiver returns the payload to store."""
        raise NotImplementedError

    @property
    def verified(self) -> bool:
        """The peer has proved it is there (see rule 8)."""
        raise NotImplementedError

    def repeat(self, now: float, out: Outbox) -> None:
        """The peer repeated its request before proving it is there: answer it again."""
        raise NotImplementedError

    def timeout(self, now: float, out: Outbox) -> None:
        """The deadline came: retransmit, or give up when the patience has run out."""
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        return self.state is State.DONE

    def _emit(self, pkt: bytes, out: Outbox) -> None:
        self.packets_sent += 1
        out.append(pkt)

    def _finish(self, outcome: Outcome, code: int | None = None, message: str = "") -> None:
        self.state = State.DONE
        self.deadline = None
        if self.outcome is None:
            self.outcome, self.error_code, self.error_message = outcome, code, message

    def fail(self, code: int, message: str, out: Outbox) -> None:
        """End the session with an ERROR of ours (a backend or local failure)."""
        if self.state is State.DONE:
            return
        out.clear()
        self._emit(packet.error(code, message), out)
        self._finish(Outcome.SERVER_ERROR, code, message)

    def abandon(self, message: str = "abandoned") -> None:
        """End silently: the client has gone or started over."""
        if self.state is not State.DONE:
            self._finish(Outcome.CLIENT_ERROR, None, message)

    def _heard(self, now: float) -> None:
        self.packets_received += 1
        self.last_heard_at = now
        if self.first_reply_at is None:
            self.first_reply_at = now

    def _peer_error(self, data: bytes) -> None:
        try:
            err = packet.parse_error(data)
            code, msg = err.code, err.message
        except packet.MalformedPacket:
            code, msg = packet.ERR_UNDEFINED, ""
        if code == packet.ERR_OPTIONS and self.state is State.STARTING and self.oack is not None:
            self.tsize_probe = True
        self._finish(Outcome.CLIENT_ERROR, code, msg)

    def _illegal(self, why: str, out: Outbox) -> None:
        self._emit(packet.error(packet.ERR_ILLEGAL, packet.MESSAGES[packet.ERR_ILLEGAL]), out)
        self._finish(Outcome.SERVER_ERROR, packet.ERR_ILLEGAL, why)

    def _give_up(self) -> None:
        self._finish(Outcome.TIMEOUT, None, "timed out after %d retransmissions" % self.retransmits)
