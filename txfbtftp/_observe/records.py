"""One record per session, however it ended.

The session machines already count what a record needs (bytes, packets,
retransmissions, duplicates) with plain integer increments; nothing here runs
per packet.  A :class:`SessionRecord` is built once, when a session ends:
completed, failed, timed out, aborted by the client, or refused before a
transfer started.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from txfbtftp._observe.logs import fmt, log
from txfbtftp._protocol import packet
from txfbtftp._protocol.machine import Outcome

#: Why a session that did not succeed ended, by the error code we sent.
_SERVER_REASONS = {
    packet.ERR_NOT_FOUND: "not_found",
    packet.ERR_ACCESS: "access_violation",
    packet.ERR_DISK_FULL: "disk_full",
    packet.ERR_ILLEGAL: "illegal_operation",
    packet.ERR_EXISTS: "file_exists",
    packet.ERR_OPTIONS: "options_refused",
}

#: Every value :attr:`SessionRecord.reason` takes: a bounded set, fit for a
#: metric label.
REASONS = ("ok", "tsize_probe", "client_error", "timeout") + tuple(_SERVER_REASONS.values()) + (
    "server_error", "server_shutdown")


@dataclass(frozen=True)
class SessionRecord:
    """One finished session, as plain values (JSON-ready via :meth:`as_dict`).

    Packets are counted after the request (which is not): a session refused
    before its transfer started has sent one packet, its ERROR.
    """

    client: str
    client_port: int
    #: The address and port the request was sent to.
    local: str
    local_port: int
    path: str
    mode: str
    #: ``"read"`` (RRQ, a download) or ``"write"`` (WRQ, an upload).
    direction: str
    options_requested: dict[str, str]
    #: What the OACK carried; empty when no OACK was sent.
    options_acknowledged: dict[str, str]
    #: The block and window sizes used; None when no transfer started.
    blksize: int | None
    windowsize: int | None
    #: The negotiated ``tsize``: the file's size on a read, the announced size on a write.
    tsize: int | None
    #: Wall-clock times (``time.time()``).
    started_at: float
    ended_at: float
    #: Seconds from the request to the end, by the reactor's clock.
    duration: float
    #: Seconds from the request to the client's first packet on the session
    #: (its answer to our first packet: the backend's latency plus a round
    #: trip); None if the client never answered.
    time_to_first_packet: float | None
    #: Payload bytes moved, each counted once.
    bytes_transferred: int
    #: Payload bytes we sent, retransmissions included (zero for uploads).
    bytes_sent: int
    packets_sent: int
    packets_received: int
    retransmits: int
    #: Duplicate ACKs (downloads) or duplicate DATA blocks (uploads) received.
    duplicates: int
    #: ``ok``, ``client-error``, ``timeout``, ``server-error`` or ``server-shutdown``.
    outcome: str
    #: The TFTP error code sent (server-error) or received (client-error).
    error_code: int | None
    error_message: str
    #: The client ended the session with ERROR 8 right after our OACK
    #: (UEFI asking for the size only).
    tsize_probe: bool

    @property
    def reason(self) -> str:
        """The outcome in one word from :data:`REASONS`: server errors are told apart by code."""
        if self.outcome == Outcome.OK.value:
            return "ok"
        if self.tsize_probe:
            return "tsize_probe"
        if self.outcome == Outcome.CLIENT_ERROR.value:
            return "client_error"
        if self.outcome == Outcome.TIMEOUT.value:
            return "timeout"
        if self.outcome == Outcome.SHUTDOWN.value:
            return "server_shutdown"
        if self.error_code is None:
            return "server_error"
        return _SERVER_REASONS.get(self.error_code, "server_error")

    def as_dict(self) -> dict[str, Any]:
        """Every field, the option dicts copied (what ``dataclasses.asdict``
        gives, without its deep copy of every value: one per session ends
        up in the log)."""
        d = dict(vars(self))
        d["options_requested"] = dict(self.options_requested)
        d["options_acknowledged"] = dict(self.options_acknowledged)
        return d


#: What a log line keeps of what a client wrote (a request may carry 64 KiB):
#: the characters of a name or an option, and the options.
_CLIP, _OPTIONS = 512, 16


def _clip(text: str, limit: int = _CLIP) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _logged(r: SessionRecord) -> dict[str, Any]:
    """``r``'s fields for its log line, what the client wrote clipped: the
    log must not grow by what an anonymous request chooses to send."""
    d = r.as_dict()
    d["path"], d["error_message"] = _clip(r.path), _clip(r.error_message)
    for key in ("options_requested", "options_acknowledged"):
        d[key] = {_clip(k, 64): _clip(v, 64) for k, v in list(d[key].items())[:_OPTIONS]}
    return d


def log_record(r: SessionRecord) -> None:
    """The session's one line at info; the event carries every field as a
    key (the client's words clipped: see :func:`_logged`)."""
    peer = fmt((r.client, r.client_port))
    verb = "RRQ" if r.direction == "read" else "WRQ"
    fields = _logged(r)
    if r.tsize_probe:
        log.info("{peer} {verb} {path!r}: tsize probe (ERROR 8 after OACK)", peer=peer, verb=verb, **fields)
        return
    result = r.outcome
    if r.error_code is not None:
        result += " %d %s" % (r.error_code, fields["error_message"])
    elif r.error_message and r.outcome != Outcome.OK.value:
        result += " (%s)" % fields["error_message"]
    log.info("{peer} {verb} {path!r} {mode}: {bytes_transferred} bytes in {duration:.3f}s, {result}",
             peer=peer, verb=verb, result=result, **fields)
