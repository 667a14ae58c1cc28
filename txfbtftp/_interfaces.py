"""The seams of txfbtftp: what a backend provides, and what it is given.

A backend answers reads (:class:`IBackend`) and, if it takes uploads,
writes (:class:`IWritableBackend`); a read-only backend has no
``get_writer`` to write.  One that holds resources between start and stop
(connection pools, caches) also provides :class:`ILifecycle`, and one whose
configuration can be read again while serving :class:`IReloadable`, and one
with events of its own to count :class:`ICounting`; the service that serves
it calls those methods.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, Union

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.internet.defer import Deferred

#: ``(host, port)``; hosts in their natural form (``192.0.2.7``, never
#: ``::ffff:192.0.2.7``).
Address = tuple[str, int]

_T = TypeVar("_T")
#: A value, or a Deferred that fires with it: what backends may return.
MaybeDeferred = Union[_T, "Deferred[_T]"]


@dataclass(frozen=True)
class TransferRequest:
    """Everything a backend may base its answer on, passed explicitly.

    ``path`` is clean (:mod:`txfbtftp._protocol.paths`): ``/`` separators, no
    leading ``/``, no empty, ``.`` or ``..`` component, no NUL or control
    character, at most 512 bytes; ``raw_path`` is what the client sent.
    ``local`` is the address the request was sent to, which on a multi-homed
    host tells which network the client is on.  ``options`` are the
    client's, lower-cased.
    """

    path: str
    client: Address
    local: Address
    mode: str
    options: dict[str, str] = field(default_factory=dict)
    write: bool = False
    #: The name as the client sent it (``path`` is its clean form).
    raw_path: str = ""


class IReader(Interface):
    """A file being downloaded."""

    size = Attribute("Size in bytes as it will be sent (int), or None when unknown.")

    def read(n: int) -> MaybeDeferred[bytes]:
        """Return up to ``n`` bytes, or a Deferred firing with them.

        Fewer than ``n`` bytes means the end of the file.  A synchronous
        reader keeps the data path free of Deferreds; return one only when
        the bytes are not at hand.
        """

    def close() -> None:
        """Release resources; called exactly once, however the session ends."""


class IWriter(Interface):
    """A file being uploaded.  Nothing is visible before ``commit``."""

    def write(data: bytes) -> Deferred[None] | None:
        """Store ``data``; may return a Deferred."""

    def commit() -> Deferred[None] | None:
        """The upload is complete and may become visible; may return a Deferred."""

    def abort() -> None:
        """Discard everything written; called on any failure or timeout."""


class IBackend(Interface):
    """Answers reads.

    ``get_reader`` may return the reader, a Deferred firing with it, or
    raise (or fail with) a :class:`~txfbtftp.TFTPError` subclass, which
    becomes the ERROR the client sees.  A Deferred still waiting when the
    watchdog's patience runs out is cancelled: its canceller should release
    what it holds, as a result that comes after a cancel is dropped.
    """

    def get_reader(path: str, request: TransferRequest) -> MaybeDeferred[IReader]:
        """An :class:`IReader` for ``path``."""


class IWritableBackend(IBackend):
    """Answers reads and uploads.  A backend without it refuses every upload
    with ERROR 2."""

    def get_writer(path: str, request: TransferRequest) -> MaybeDeferred[IWriter]:
        """An :class:`IWriter` for ``path``; may refuse as ``get_reader`` does."""


class Unavailable(ValueError):
    """What a backend serves from is missing or unreadable (a root directory,
    a rule file): raised by ``start`` or ``reload``."""


class Unwritable(ValueError):
    """Where a backend must write (a cache directory) cannot be written."""


class ILifecycle(Interface):
    """Something (usually a backend) with resources to set up and release.

    :class:`~txfbtftp.TFTPService` calls :meth:`start` when it starts, after
    its ports are bound and after ``twistd`` dropped privileges and
    chrooted, so files are created by the user that serves them; and
    :meth:`stop` when it stops, after the sessions ended.  Wrapping backends
    (chains, remapping) pass both on to what they wrap.
    """

    def start() -> None:
        """Acquire what serving needs; raise ValueError (one clear sentence)
        if it cannot: :class:`Unavailable` for something missing or
        unreadable, :class:`Unwritable` for somewhere it cannot write."""

    def stop() -> Deferred[None] | None:
        """Release everything: no connection, timer or thread left behind."""


class ICounting(Interface):
    """Something (usually a backend) with events of its own to count in the
    server's statistics: a cache's hits, and its downloads served from the
    origin because they could not be cached.

    :class:`~txfbtftp.TFTPService` hands it its statistics' counter when it
    is built; wrapping backends (chains, remapping) pass it on.  Counters
    reach ``--workers``' main process and the periodic statistics line as
    the server's own do.
    """

    def count_with(increment: Callable[[str, int], None]) -> None:
        """Count from now on with ``increment(name, n)`` (the
        :class:`~txfbtftp.ServerStats`' ``increment_counter``)."""


class IReloadable(Interface):
    """Something (usually a backend) whose configuration can be read again
    while it serves: ``SIGHUP`` under the daemon, :meth:`TFTPService.reload`
    in code.  Sessions in progress are not disturbed."""

    def reload() -> list[str]:
        """Read the configuration again; return what was reloaded, one short
        description each.  If the new configuration is invalid, keep the old
        one and raise ValueError saying why (one sentence)."""
