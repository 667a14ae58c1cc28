"""``http:`` without a cache: each download streams from the origin."""
from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import implementer

from txfbtftp._backends.http.iorigin import IBody, OriginResponse
from txfbtftp._backends.http.origin import HTTPOrigin
from txfbtftp._interfaces import IBackend, ILifecycle, IReader, TransferRequest


@implementer(IBackend, ILifecycle)
class HTTPBackend:
    """Streams each download straight from the origin; uploads are refused.
    Stopping closes the origin's connections."""

    def __init__(self, origin: HTTPOrigin) -> None:
        self.origin = origin

    def start(self) -> None:
        self.origin.start()

    def stop(self) -> Deferred[None]:
        return self.origin.stop()

    def get_reader(self, path: str, request: TransferRequest) -> Deferred[IReader]:
        return self.origin.fetch(path).addCallback(_body)


def _body(response: OriginResponse) -> IBody:
    assert response.body is not None  # a plain fetch answers 200 or fails
    return response.body
