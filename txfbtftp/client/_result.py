"""A finished transfer, recorded as the server records its sessions."""
from __future__ import annotations

from dataclasses import dataclass

from txfbtftp._interfaces import Address
from txfbtftp._observe.records import SessionRecord
from txfbtftp._protocol.client import ClientTransfer
from txfbtftp._protocol.machine import Outcome


@dataclass(frozen=True)
class ClientResult:
    """What :func:`~txfbtftp.client.get` and :func:`~txfbtftp.client.put` fire with.

    ``record`` is a :class:`~txfbtftp.SessionRecord`, the server's own
    record type, seen from the client: ``client``/``client_port`` are this
    side, ``local``/``local_port`` the address the request went to,
    ``time_to_first_packet`` the wait for the server's first answer,
    ``bytes_sent`` the payload this side sent (zero for a download), and
    the counters are this side's.
    """

    record: SessionRecord
    #: The file, when it was downloaded into memory (no ``to``); else None.
    data: bytes | None = None
    #: The server's transfer ID: the address and port it answered from.
    peer: Address | None = None

    @property
    def throughput(self) -> float:
        """Payload bytes per second, request to end."""
        r = self.record
        return r.bytes_transferred / r.duration if r.duration > 0 else 0.0


def record(transfer: ClientTransfer, us: Address, server: Address, started_at: float, ended_at: float,
           ended_clock: float) -> SessionRecord:
    """``transfer``'s record: wall-clock ``started_at``/``ended_at``, and
    ``ended_clock`` on the reactor's clock, as the transfer's times are."""
    t, m = transfer, transfer.machine
    first = t.first_reply_at
    return SessionRecord(
        client=us[0], client_port=us[1], local=server[0], local_port=server[1],
        path=t.path, mode=t.mode, direction="write" if t.write else "read",
        options_requested=dict(t.options), options_acknowledged=dict(t.acknowledged),
        blksize=m.blksize if m is not None else None, windowsize=m.windowsize if m is not None else None,
        tsize=t.tsize, started_at=started_at, ended_at=ended_at,
        duration=max(0.0, ended_clock - t.started_at),
        time_to_first_packet=None if first is None else max(0.0, first - t.started_at),
        bytes_transferred=m.bytes if m is not None else 0,
        bytes_sent=m.bytes_sent if m is not None and t.write else 0,
        packets_sent=t.packets_sent, packets_received=t.packets_received, retransmits=t.retransmits,
        duplicates=t.duplicates, outcome=(t.outcome or Outcome.CLIENT_ERROR).value,
        error_code=t.error_code, error_message=t.error_message, tsize_probe=False)
