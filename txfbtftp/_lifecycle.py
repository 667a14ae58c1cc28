"""Starting and stopping the parts of a backend that have a lifecycle."""
from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred

from txfbtftp._interfaces import ILifecycle


def start_all(parts: Iterable[object]) -> None:
    """Start every part that provides :class:`ILifecycle`, in order."""
    for part in parts:
        if ILifecycle.providedBy(part):
            part.start()


def stop_all(parts: Iterable[object]) -> Deferred[None]:
    """Stop every part that provides :class:`ILifecycle`; fires when all have stopped."""
    waits: list[Deferred[object]] = [maybeDeferred(part.stop) for part in parts if ILifecycle.providedBy(part)]
    return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)
