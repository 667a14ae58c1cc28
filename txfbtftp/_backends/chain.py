"""Several backends tried in order, so generated files can sit in front of a
directory (or a directory in front of a fallback) without either knowing.

A read goes to the first backend that does not raise ``FileNotFound``; any
other error is the answer, so a backend can still refuse a path outright.
A write goes to the first backend that accepts it: ``FileNotFound`` and
``AccessViolation`` (a read-only backend, or a path it does not take) pass
it on; anything else (``FileExists``, ``DiskFull``, ...) is the answer.
When no backend takes a write the client gets the first ``AccessViolation``
if there was one, else ``FileNotFound``; a backend without uploads
(no :class:`~txfbtftp.IWritableBackend`) counts as an ``AccessViolation``.
Starting, stopping and counting reach every backend of the chain.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from txfbtftp._interfaces import IBackend, ICounting, ILifecycle, IReloadable, IWritableBackend, TransferRequest
from txfbtftp._lifecycle import count_all, reload_all, start_all, stop_all
from txfbtftp._protocol import errors

_Passes = tuple[type[errors.TFTPError], ...]
_READ_PASSES: _Passes = (errors.FileNotFound,)
_WRITE_PASSES: _Passes = (errors.FileNotFound, errors.AccessViolation)


@implementer(IWritableBackend, ILifecycle, IReloadable, ICounting)
class ChainBackend:
    """Asks ``backends`` in order; synchronous answers stay synchronous."""

    def __init__(self, backends: Sequence[IBackend]) -> None:
        if not backends:
            raise ValueError("a chain needs at least one backend")
        self.backends = list(backends)

    def start(self) -> None:
        start_all(self.backends)

    def stop(self) -> Deferred[None]:
        return stop_all(self.backends)

    def count_with(self, increment: Callable[[str, int], None]) -> None:
        count_all(self.backends, increment)

    def reload(self) -> list[str]:
        return reload_all(self.backends)

    def get_reader(self, path: str, request: TransferRequest) -> Any:
        return self._ask("get_reader", _READ_PASSES, path, request, 0, None)

    def get_writer(self, path: str, request: TransferRequest) -> Any:
        return self._ask("get_writer", _WRITE_PASSES, path, request, 0, None)

    def _ask(self, method: str, passes: _Passes, path: str, request: TransferRequest,
             start: int, refusal: errors.TFTPError | None) -> Any:
        for index in range(start, len(self.backends)):
            backend = self.backends[index]
            if method == "get_writer" and not IWritableBackend.providedBy(backend):
                refusal = _keep(refusal, errors.AccessViolation("Uploads are disabled"))
                continue
            try:
                result = getattr(backend, method)(path, request)
            except passes as e:
                refusal = _keep(refusal, e)
                continue
            if isinstance(result, Deferred):
                return result.addErrback(self._next, method, passes, path, request, index + 1, refusal)
            return result
        raise refusal or errors.FileNotFound()

    def _next(self, failure: Failure, method: str, passes: _Passes, path: str,
              request: TransferRequest, start: int, refusal: errors.TFTPError | None) -> Any:
        failure.trap(*passes)
        return self._ask(method, passes, path, request, start, _keep(refusal, failure.value))


def _keep(refusal: errors.TFTPError | None, new: Any) -> errors.TFTPError:
    """The refusal to report: the first AccessViolation, else the latest error."""
    if isinstance(refusal, errors.AccessViolation):
        return refusal
    return new

