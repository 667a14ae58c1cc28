"""One end of a socket pair, as a connection of the reactor's."""
from __future__ import annotations

import socket
from typing import TypeVar

from twisted.internet.interfaces import IAddress, IReactorSocket
from twisted.internet.protocol import Protocol, ServerFactory

_P = TypeVar("_P", bound=Protocol)


class _Given(ServerFactory):
    """Hands out the one protocol instance it was given."""

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        return self._protocol


def adopt(reactor: IReactorSocket, fd: int, protocol: _P) -> _P:
    """Connect ``protocol`` to the Unix stream socket ``fd`` (which the reactor
    duplicates: the caller closes ``fd``)."""
    reactor.adoptStreamConnection(fd, socket.AF_UNIX, _Given(protocol))
    return protocol
