"""An upload's driver: in-order payloads to the backend's writer, then commit.

Writes happen in order; while one is pending (a Deferred), later blocks wait
in a queue.  The final ACK leaves only once the writer has committed, so a
client that saw it knows the file is there.
"""
from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from txfbtftp._interfaces import Address, IWritableBackend, IWriter, MaybeDeferred, TransferRequest
from txfbtftp._net.listener import Local
from txfbtftp._protocol import errors
from txfbtftp._protocol.machine import Outcome, State
from txfbtftp._protocol.options import Negotiated
from txfbtftp._protocol.packet import Request
from txfbtftp._protocol.schedule import Watchdog
from txfbtftp._protocol.write import WriteMachine
from txfbtftp._netascii import NetasciiWriter
from txfbtftp._server.session import Session, SessionHost


class WriteSession(Session[WriteMachine]):
    """Serves a WRQ into the backend's :class:`~txfbtftp.IWriter`."""

    writer: IWriter | None = None

    def __init__(self, host: SessionHost, request: Request, peer: tuple[Any, ...], key: Address,
                 local: Local, listening: Address) -> None:
        super().__init__(host, request, peer, key, local, listening)
        self._queue: deque[bytes] = deque()

    def _open(self, path: str, request: TransferRequest) -> MaybeDeferred[IWriter]:
        backend = self.host.backend
        if not IWritableBackend.providedBy(backend):
            raise errors.AccessViolation("Uploads are disabled")
        return backend.get_writer(path, request)

    def _adopt(self, handle: IWriter) -> int | None:
        self.writer = NetasciiWriter(handle) if self.request.mode == "netascii" else handle
        return None

    @property
    def complete(self) -> bool:
        m = self.machine
        return m is not None and m.state is State.DALLYING

    def _discard(self, handle: IWriter) -> None:
        handle.abort()

    def _machine(self, neg: Negotiated, watchdog: Watchdog, oack: bytes | None) -> WriteMachine:
        cfg = self.host.config
        return WriteMachine(watchdog, neg.blksize, neg.windowsize, neg.rollover, oack,
                            cfg.limits.max_upload_size, cfg.dally, quiet_until_verified=True)

    def _release(self, outcome: Outcome | None) -> None:
        if self.writer is not None and outcome is not Outcome.OK:
            self.writer.abort()

    def receive(self, data: bytes) -> None:
        m = self.machine
        if m is None:
            return  # still opening; the client will repeat itself
        now = self._seconds()
        payload = m.receive(data, now, self._out)
        if payload is not None:
            self._store(payload)
        if self._wait.pending is None and m.complete and m.state is State.COMMITTING:
            self._commit()
        self._flush()
        self._after(m, now)

    def _store(self, data: bytes) -> None:
        """Write in order; while a write is pending, later blocks queue up."""
        if self._wait.pending is not None:
            self._queue.append(data)
            return
        assert self.writer is not None
        try:
            result = self.writer.write(data)
        except Exception:
            self._io_failed(Failure())
            return
        if isinstance(result, Deferred):
            self._wait.wait_for(result)
            result.addCallbacks(self._written, self._io_failed)

    def _written(self, _: Any) -> None:
        self._wait.done()
        while self._queue and not self._closed:
            self._store(self._queue.popleft())
            if self._wait.pending is not None:
                return
        m = self.machine
        if not self._closed and m is not None and m.complete and m.state is State.COMMITTING:
            self._commit()

    def _commit(self) -> None:
        assert self.writer is not None
        d = maybeDeferred(self.writer.commit)
        self._wait.wait_for(d)
        d.addCallbacks(self._committed, self._io_failed)
        d.addErrback(self._crashed)

    def _committed(self, _: Any) -> None:
        self._wait.done()
        m = self.machine
        if self._closed or m is None:
            return
        now = self._seconds()
        m.committed(now, self._out)
        self._flush()
        self._after(m, now)
