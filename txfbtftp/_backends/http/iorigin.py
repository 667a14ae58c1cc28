"""The seam between a cache and the origin it fronts.

An :class:`~txfbtftp.IBackend` hands out readers; a cache needs more:
validators to revalidate with, and the body as a stream it can copy to disk
while clients read along.  :class:`~txfbtftp._backends.http.origin.HTTPOrigin`
implements it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

from txfbtftp._interfaces import IReader, MaybeDeferred

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


class IBody(IReader):
    """A response body arriving over time, with bounded buffering."""

    complete = Attribute("True once the body has ended and is known to be whole.")

    def readsome(limit: int) -> MaybeDeferred[bytes]:
        """Whatever is buffered, up to ``limit`` bytes, or a Deferred firing
        with the next bytes; ``b""`` at the end.  Fails with a TFTPError if the
        body breaks off."""


@dataclass
class OriginResponse:
    #: 200; 304 when a conditional fetch found the cached copy current; 206
    #: for the rest of a file; 416 when there was no rest.
    status: int
    #: The body's length (what it will deliver) when announced, else None.
    size: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    #: An :class:`IBody` for a 200; None for a 304.
    body: IBody | None = None


class IOrigin(Interface):
    """Where a cache gets files from."""

    def key(path: str) -> str:
        """The canonical name of ``path`` (two spellings of one file, one key).

        Raises AccessViolation for paths that would leave the origin's base
        and FileNotFound for empty ones.
        """

    def fetch(path: str, etag: str | None = None,
              last_modified: str | None = None) -> Deferred[OriginResponse]:
        """A Deferred firing with an :class:`OriginResponse`.

        With ``etag`` or ``last_modified`` the fetch is conditional and may
        answer 304.  Fails with FileNotFound, AccessViolation or a plain
        TFTPError (already logged) when the origin cannot supply the file.
        """

    def fetch_range(path: str, offset: int, size: int | None, etag: str | None = None,
                    last_modified: str | None = None) -> Deferred[OriginResponse]:
        """The rest of ``path`` from byte ``offset`` on (its body starts there),
        provided the file is still the one ``size`` and the validators
        describe; a plain TFTPError (logged) if it has changed, or, past byte
        0, if no validator can tell (see :func:`resumable`).  416 with no
        body when there is nothing more: the file ends at ``offset`` (or, its
        size unknown, the origin says only that it ends before)."""


def resumable(etag: str | None, last_modified: str | None) -> bool:
    """Whether a download of the file these validators describe may go on
    from the middle.  Without either, nothing says the origin's file is
    still that one: a file changed to another of the same size would be
    spliced from the two."""
    return etag is not None or last_modified is not None
