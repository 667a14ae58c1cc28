"""The client's half of TFTP, sans I/O: a request, then a server's machine in reverse.

A download sends an RRQ and then receives like a server receiving an upload
(:class:`~txfbtftp._protocol.write.WriteMachine`: DATA in, ACKs out); an
upload sends a WRQ and then sends like a server serving a download
(:class:`~txfbtftp._protocol.read.ReadMachine`).  Only the request phase is
the client's own: the request is repeated on the schedule until the server
answers; an OACK is checked against what was asked (an option that was not
asked for, or a value beyond the one asked, is refused with ERROR 8, as RFC
2347 says); an answer without an OACK means RFC 1350 defaults.

The rules of :mod:`txfbtftp._protocol.machine` hold here too: no I/O, no
clock, packets appended to ``out``; the driver locks the server's transfer
ID on the first answer and passes only that peer's datagrams.  A repeated
OACK (our answer to it was lost) is answered again rather than taken for an
illegal packet.  The counters add the request phase to the machine's, so a
driver builds the same record a server does.
"""
from __future__ import annotations

import enum

from txfbtftp._protocol import errors, packet
from txfbtftp._protocol.machine import Machine, Outbox, Outcome, State
from txfbtftp._protocol.options import DEFAULT_BLKSIZE, MAX_BLKSIZE, MAX_WINDOWSIZE, MIN_BLKSIZE
from txfbtftp._protocol.read import ReadMachine
from txfbtftp._protocol.schedule import RTOEstimator, Schedule, Watchdog
from txfbtftp._protocol.write import WriteMachine


def request_options(blksize: int | None = None, windowsize: int = 1, tsize: int | None = None,
                    timeout: int | None = None, utimeout: int | None = None) -> dict[str, str]:
    """The options of a request, each checked against its RFC's range.

    What is at its RFC 1350 default (``blksize`` 512 or None, ``windowsize``
    1) is not asked for; ``tsize`` is 0 for a download, the size for an
    upload, None for none.  Raises ValueError for a value out of range.
    """
    out: dict[str, str] = {}
    if blksize is not None and blksize != DEFAULT_BLKSIZE:
        if not MIN_BLKSIZE <= blksize <= MAX_BLKSIZE:
            raise ValueError("blksize must be within %d..%d" % (MIN_BLKSIZE, MAX_BLKSIZE))
        out["blksize"] = str(blksize)
    if windowsize != 1:
        if not 1 <= windowsize <= MAX_WINDOWSIZE:
            raise ValueError("windowsize must be within 1..%d" % MAX_WINDOWSIZE)
        out["windowsize"] = str(windowsize)
    if tsize is not None:
        if tsize < 0:
            raise ValueError("tsize must not be negative")
        out["tsize"] = str(tsize)
    if timeout is not None and utimeout is not None:
        raise ValueError("ask for timeout or utimeout, not both")
    if timeout is not None:
        if not 1 <= timeout <= 255:
            raise ValueError("timeout must be within 1..255 seconds")
        out["timeout"] = str(timeout)
    if utimeout is not None:
        if not 10_000 <= utimeout <= 255_000_000:
            raise ValueError("utimeout must be within 10000..255000000 microseconds")
        out["utimeout"] = str(utimeout)
    return out


def oack_problem(asked: dict[str, str], accepted: dict[str, str]) -> str | None:
    """Why an OACK is unacceptable for a request that ``asked``, or None (RFC 2347-2349, 7440)."""
    for name, value in accepted.items():
        wanted = asked.get(name)
        if wanted is None:
            return "Option %s was not requested" % name
        if not value.isdigit():
            return "Bad value for %s" % name
        n = int(value)
        if name == "blksize" and not MIN_BLKSIZE <= n <= min(int(wanted), MAX_BLKSIZE):
            return "Bad blksize"
        if name == "windowsize" and not 1 <= n <= int(wanted):
            return "Bad windowsize"
        if name in ("timeout", "utimeout") and value != wanted:
            return "Bad %s" % name
        if name == "rollover" and n not in (0, 1):
            return "Bad rollover"
    return None


class Phase(enum.Enum):
    REQUESTING = "requesting"
    TRANSFER = "transfer"
    DONE = "done"


class ClientTransfer:
    """One transfer, download (``write=False``) or upload, from request to end.

    ``options`` are requested as given (names lower-case, values strings).
    After the end, ``outcome``, ``error_code`` and ``error_message`` say how
    it went, ``acknowledged`` holds the OACK's options and ``machine`` the
    counters.
    """

    def __init__(self, path: str, write: bool = False, mode: str = "octet",
                 options: dict[str, str] | None = None, schedule: Schedule | None = None,
                 adaptive: bool = True, rto_min: float = 0.05, dally: float = 0.0) -> None:
        self.path = path
        self.write = write
        self.mode = mode
        self.options = dict(options or {})
        self.schedule = schedule or Schedule.parse("1,2,4,8,16")
        self.adaptive = adaptive
        self.rto_min = rto_min
        self.dally = dally
        self.request = packet.request(packet.WRQ if write else packet.RRQ, path, mode, self.options)
        self.phase = Phase.REQUESTING
        self.machine: Machine | None = None
        self.acknowledged: dict[str, str] = {}
        self.deadline: float | None = None
        self.outcome: Outcome | None = None
        self.error_code: int | None = None
        self.error_message = ""
        self.started_at = 0.0
        self.first_reply_at: float | None = None
        self.requests_sent = 0
        self._watchdog = Watchdog(self.schedule)
        # Packets the machine does not count: the request phase's answers and
        # errors, and repeated OACKs.
        self._sent = 0
        self._received = 0
        self._resent = 0

    @property
    def finished(self) -> bool:
        return self.phase is Phase.DONE

    @property
    def complete(self) -> bool:
        """Every byte moved (a download may still dally to re-ACK a repeated last block)."""
        return self.outcome is Outcome.OK

    @property
    def wants(self) -> int:
        """For an upload: how many more blocks :meth:`feed` can take now."""
        m = self.machine
        return m.wants if isinstance(m, ReadMachine) and self.phase is Phase.TRANSFER else 0

    @property
    def packets_sent(self) -> int:
        m = self.machine
        return self.requests_sent + self._sent + (m.packets_sent if m is not None else 0)

    @property
    def packets_received(self) -> int:
        m = self.machine
        return self._received + (m.packets_received if m is not None else 0)

    @property
    def retransmits(self) -> int:
        """Repeated requests, and the machine's retransmissions."""
        m = self.machine
        return max(0, self.requests_sent - 1) + self._resent + (m.retransmits if m is not None else 0)

    @property
    def duplicates(self) -> int:
        m = self.machine
        return m.duplicates if m is not None else 0

    def error(self) -> errors.TFTPError | None:
        """How the transfer failed, as the exception a backend would raise
        for that code (:class:`~txfbtftp.TFTPTimeout` for silence); None if
        it has not failed."""
        if self.outcome is None or self.outcome is Outcome.OK:
            return None
        if self.outcome is Outcome.TIMEOUT:
            return errors.TFTPTimeout(self.error_message or "Timed out")
        if self.error_code is None:
            return errors.TFTPError(self.error_message or "Transfer abandoned")
        return errors.from_code(self.error_code, self.error_message)

    @property
    def tsize(self) -> int | None:
        """The size the server announced in its OACK, if it did."""
        value = self.acknowledged.get("tsize")
        return int(value) if value is not None and value.isdigit() else None

    def start(self, now: float, out: Outbox) -> None:
        self.started_at = now
        self.requests_sent += 1
        out.append(self.request)
        self.deadline = now + self._watchdog.progress(now)

    def feed(self, payload: bytes, now: float, out: Outbox) -> int:
        """For an upload: send the next block (a short one is the last)."""
        m = self.machine
        assert isinstance(m, ReadMachine), "feed is for uploads, after the server answered"
        wants = m.feed(payload, now, out)
        self._follow(m)
        return wants

    def receive(self, data: bytes, now: float, out: Outbox) -> bytes | None:
        """A datagram from the server; the payload it brought, for a download."""
        if self.phase is Phase.DONE:
            return None
        m = self.machine
        if m is not None:
            if len(data) > 1 and data[1] == packet.OACK and data[0] == 0:
                self._repeated_oack(m, out)
                return None
            payload = m.receive(data, now, out)
            if isinstance(m, WriteMachine) and m.complete and m.state is State.COMMITTING:
                m.committed(now, out)  # nothing to make visible: the final ACK goes at once
            self._follow(m)
            return payload
        self.first_reply_at = now
        op = packet.opcode_of(data)
        if not self.write and op == packet.DATA:
            self._begin({}, now)
            return self.receive(data, now, out)  # the machine counts it
        self._received += 1
        if op == packet.ERROR:
            self._server_error(data)
            return None
        if op == packet.OACK:
            return self._oack(data, now, out)
        if self.write and op == packet.ACK and data[2:4] == b"\0\0":
            m = self._begin({}, now)
            m.start(now, out)
            self._follow(m)
            return None
        self._refuse(packet.ERR_ILLEGAL, "Unexpected answer to the request", out)
        return None

    def timeout(self, now: float, out: Outbox) -> None:
        if self.phase is Phase.DONE or self.deadline is None or now < self.deadline:
            return
        m = self.machine
        if m is not None:
            m.timeout(now, out)
            self._follow(m)
            return
        wait = self._watchdog.expired(now)
        if wait is None:
            self._end(Outcome.TIMEOUT, None, "no answer to the request")
            return
        self.requests_sent += 1
        out.append(self.request)
        self.deadline = now + wait

    def abort(self, code: int, message: str, out: Outbox) -> None:
        """Give up with an ERROR to the server (the application stopped)."""
        if self.phase is Phase.REQUESTING:
            self._end(Outcome.CLIENT_ERROR, code, message)
        elif self.machine is not None:
            self.machine.fail(code, message, out)
            self._follow(self.machine)

    def _repeated_oack(self, m: Machine, out: Outbox) -> None:
        """The server repeats its OACK: our ACK 0 was lost (a download), or
        our first DATA was (an upload; our own timer resends that)."""
        self._received += 1
        if isinstance(m, WriteMachine) and m.state is State.STARTING:
            self._sent += 1
            self._resent += 1
            out.append(packet.ACK_PACKETS[0])
            self.deadline = m.deadline

    # -- the request phase -------------------------------------------------------
    def _oack(self, data: bytes, now: float, out: Outbox) -> bytes | None:
        try:
            accepted = packet.parse_oack(data)
        except packet.MalformedPacket:
            accepted = None
        problem = "Malformed OACK" if accepted is None else oack_problem(self.options, accepted)
        if problem is not None or accepted is None:
            self._refuse(packet.ERR_OPTIONS, problem or "Malformed OACK", out)
            return None
        self.acknowledged = accepted
        m = self._begin(accepted, now)
        m.start(now, out)  # ACK 0 for a download; nothing yet for an upload
        self._follow(m)
        return None

    def _begin(self, accepted: dict[str, str], now: float) -> Machine:
        blksize = int(accepted.get("blksize", DEFAULT_BLKSIZE))
        windowsize = int(accepted.get("windowsize", 1))
        rollover = int(accepted.get("rollover", 0))
        schedule = self.schedule
        if "timeout" in accepted:
            schedule = schedule.based_on(float(accepted["timeout"]))
        elif "utimeout" in accepted:
            schedule = schedule.based_on(int(accepted["utimeout"]) / 1e6)
        estimator = RTOEstimator(self.rto_min) if self.adaptive else None
        watchdog = Watchdog(schedule, estimator)
        m: Machine
        if self.write:
            m = ReadMachine(watchdog, blksize, windowsize, rollover)
        else:
            m = WriteMachine(watchdog, blksize, windowsize, rollover, dally=self.dally)
        self.machine = m
        self.phase = Phase.TRANSFER
        self.deadline = None
        return m

    def _refuse(self, code: int, message: str, out: Outbox) -> None:
        self._sent += 1
        out.append(packet.error(code, message))
        self._end(Outcome.CLIENT_ERROR, code, message)

    def _server_error(self, data: bytes) -> None:
        try:
            err = packet.parse_error(data)
            self._end(Outcome.SERVER_ERROR, err.code, err.message)
        except packet.MalformedPacket:
            self._end(Outcome.SERVER_ERROR, packet.ERR_UNDEFINED, "")

    def _follow(self, m: Machine) -> None:
        """Mirror the machine: its deadline, and its end as ours."""
        self.deadline = m.deadline
        if m.state is State.DONE:
            outcome = m.outcome or Outcome.SERVER_ERROR
            # The machine speaks as a server: its "client" is our server.
            if outcome is Outcome.CLIENT_ERROR and m.error_code is not None:
                outcome = Outcome.SERVER_ERROR
            elif outcome is Outcome.SERVER_ERROR:
                outcome = Outcome.CLIENT_ERROR
            self._end(outcome, m.error_code, m.error_message)
        elif isinstance(m, WriteMachine) and m.state is State.DALLYING and self.outcome is None:
            self.outcome = Outcome.OK  # complete; the machine only dallies now

    def _end(self, outcome: Outcome, code: int | None, message: str) -> None:
        self.phase = Phase.DONE
        self.deadline = None
        if self.outcome is None:
            self.outcome, self.error_code, self.error_message = outcome, code, message
