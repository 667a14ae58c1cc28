"""Starting, stopping and reloading the parts of a backend that can."""
from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred

from txfbtftp._interfaces import ILifecycle, IReloadable


def start_all(parts: Iterable[object]) -> None:
    """Start every part that provides :class:`ILifecycle`, in order."""
    for part in parts:
        if ILifecycle.providedBy(part):
            part.start()


def stop_all(parts: Iterable[object]) -> Deferred[None]:
    """Stop every part that provides :class:`ILifecycle`; fires when all have stopped."""
    waits: list[Deferred[object]] = [maybeDeferred(part.stop) for part in parts if ILifecycle.providedBy(part)]
    return DeferredList(waits, consumeErrors=True).addCallback(lambda _: None)


def reload_all(parts: Iterable[object]) -> list[str]:
    """Reload every part that provides :class:`IReloadable`; what each reloaded."""
    done: list[str] = []
    for part in parts:
        if IReloadable.providedBy(part):
            done.extend(part.reload())
    return done
