"""The seams of txfbtftp: what a backend provides, and what it is given."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

from zope.interface import Attribute, Interface

Address = Tuple[str, int]


@dataclass(frozen=True)
class TransferRequest:
    """Everything a backend may base its answer on, passed explicitly.

    Addresses are in their natural form (``192.0.2.7``, never
    ``::ffff:192.0.2.7``).  ``local`` is the address the request was sent to,
    which on a multi-homed host tells which network the client is on.
    """

    path: str
    client: Address
    local: Address
    mode: str
    options: Dict[str, str] = field(default_factory=dict)
    write: bool = False


class IReader(Interface):
    """A file being downloaded."""

    size = Attribute("Size in bytes as it will be sent, or None when unknown.")

    def read(n: int) -> Any:
        """Return up to ``n`` bytes, or a Deferred firing with them.

        Fewer than ``n`` bytes means the end of the file.  A synchronous
        reader keeps the data path free of Deferreds; return one only when
        the bytes are not at hand.
        """

    def close() -> None:
        """Release resources; called exactly once, however the session ends."""


class IWriter(Interface):
    """A file being uploaded.  Nothing is visible before ``commit``."""

    def write(data: bytes) -> Any:
        """Store ``data``; may return a Deferred."""

    def commit() -> Any:
        """The upload is complete and may become visible; may return a Deferred."""

    def abort() -> None:
        """Discard everything written; called on any failure or timeout."""


class IBackend(Interface):
    """Maps requests to readers and writers.

    Either method may return the object, a Deferred firing with it, or raise
    (or fail with) a :class:`txfbtftp.errors.TFTPError` subclass.
    """

    def get_reader(path: str, request: TransferRequest) -> Any:
        """An :class:`IReader` for ``path``."""

    def get_writer(path: str, request: TransferRequest) -> Any:
        """An :class:`IWriter` for ``path``."""
