"""Starting, stopping, reloading and counting the parts of a backend that can."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred

from txfbtftp._interfaces import ICounting, ILifecycle, IReloadable


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


def count_all(parts: Iterable[object], increment: Callable[[str, int], None]) -> None:
    """Hand the statistics' counter to every part that provides :class:`ICounting`."""
    for part in parts:
        if ICounting.providedBy(part):
            part.count_with(increment)
