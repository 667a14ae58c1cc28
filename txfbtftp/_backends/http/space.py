"""Room in the cache directory: eviction before writing, and start-up's tidying.

All of it runs under the directory lock, on the index as every process
sees it, so ``max_size`` holds for the directory whatever the number of
processes.  A fill sets its bytes aside when the origin answers (its
``Content-Length``; without one, what is free, up to a first step, and more
as it grows, evicting only for the bytes that have arrived): the entries,
plus what every fill in progress has set aside, must stay within
``max_size``, and the disk (``statvfs``) must have room for what the fills
have still to write and a margin.  When either is short, the fills whose
filler died (nobody holds their file locked) give their room back first;
then the least recently used entries (by their bodies' access times, which
every process sets on each use) go, skipping any body a process is reading:
readers hold it locked shared, and eviction only takes a body it can lock
exclusively without waiting.  When that is not enough, the fill is not
cached.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from txfbtftp._backends.http.index import Entry, Index
from txfbtftp._backends.http.locks import try_lock
from txfbtftp._observe.logs import log

if TYPE_CHECKING:
    from txfbtftp._backends.http.store import CacheStore

#: Kept free on the disk beyond what the fills will write: the index's rewrites need it.
MARGIN = 1 << 20


def by_use(store: CacheStore, entries: Iterable[Entry]) -> list[Entry]:
    """``entries``, least recently used first."""
    def used(entry: Entry) -> int:
        try:
            return os.stat(store.path(entry.data)).st_atime_ns
        except OSError:
            return 0
    return sorted(entries, key=used)


def make_room(store: CacheStore, ix: Index, name: str, size: int, least: int | None = None) -> int | None:
    """How many bytes the fill ``name`` can have: ``size`` if they are free,
    else as many as are, provided that is ``least`` (by default ``size``);
    short of ``least``, room is made for ``least`` and no more: the dead
    fills' bytes are reclaimed, then entries evicted.  None if it cannot be."""
    least = size if least is None else least
    if least > store.max_size:
        return None
    size = max(least, min(size, store.max_size))
    granted = _granted(store, ix, name, size)
    if granted >= least:
        return granted
    if reclaim(store, ix, name):
        granted = _granted(store, ix, name, size)
        if granted >= least:
            return granted
    for entry in by_use(store, list(ix.entries.values())):
        if evict(store, ix, entry):
            granted = _granted(store, ix, name, size)
            if granted >= least:
                return granted
    return None


def _granted(store: CacheStore, ix: Index, name: str, size: int) -> int:
    """How many of ``size`` bytes the fill ``name`` can have as things stand."""
    return max(0, size - max(0, _short(store, ix, name, size)))


def reclaim(store: CacheStore, ix: Index, name: str) -> bool:
    """Drop the fills (but ``name``'s) whose filler is gone, and their
    files: a live filler holds its file locked from claim to commit, so a
    file nobody holds has none.  A process taking a fill over holds the
    lock as well, so its fill stays; one that locks it too late finds the
    record gone (its readers go on from the origin).  Whether any went."""
    dropped = False
    for other, fill in list(ix.fills.items()):
        if other == name:
            continue
        if _remove(store, fill.part):
            log.info("cache: dropping the fill of {key!r}: the process fetching it is gone", key=fill.key)
        elif os.path.exists(store.path(fill.part)):
            continue  # held: its filler is alive
        del ix.fills[other]  # its file is gone (given up or committed meanwhile)
        dropped = True
    return dropped


def _short(store: CacheStore, ix: Index, name: str, size: int) -> int:
    """How many bytes are missing, in the cache or on the disk, for ``size`` more."""
    kept = sum(e.size for e in ix.entries.values())
    to_write = size - _written(store, ix.fills.get(name))
    for other, fill in ix.fills.items():
        if other != name and fill.size:
            kept += fill.size
            to_write += max(0, fill.size - _written(store, fill))
    st = os.statvfs(store.directory)
    return max(kept + size - store.max_size, to_write + MARGIN - st.f_bavail * st.f_frsize)


def _written(store: CacheStore, fill: object) -> int:
    part = getattr(fill, "part", None)
    try:
        return os.stat(store.path(part)).st_size if part else 0
    except OSError:
        return 0


def evict(store: CacheStore, ix: Index, entry: Entry) -> bool:
    """Remove ``entry`` unless a process is reading it."""
    try:
        fd = os.open(store.path(entry.data), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        del ix.entries[entry.name]
        return True
    try:
        if not try_lock(fd):
            return False
        log.info("cache: evicting {key!r} ({size} bytes)", key=entry.key, size=entry.size)
        os.unlink(store.path(entry.data))
        del ix.entries[entry.name]
        return True
    finally:
        os.close(fd)


def tidy(store: CacheStore, ix: Index, cold: bool) -> None:
    """At start-up: drop the entries whose body is missing or not as stored,
    and remove the files no live process holds (on a cold start, the fills
    of dead processes too; otherwise those are left to be taken over)."""
    for entry in list(ix.entries.values()):
        try:
            st = os.stat(store.path(entry.data))
        except OSError:
            log.warn("cache: dropping {key!r}: its body is missing", key=entry.key)
            del ix.entries[entry.name]
            continue
        if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
            log.warn("cache: dropping {key!r}: its body changed on disk", key=entry.key)
            _remove(store, entry.data)
            del ix.entries[entry.name]
    kept = set()
    for name, fill in list(ix.fills.items()):
        if not cold and os.path.exists(store.path(fill.part)):
            kept.add(fill.part)
        elif _remove(store, fill.part) or not os.path.exists(store.path(fill.part)):
            del ix.fills[name]
        else:
            kept.add(fill.part)
    for name in os.listdir(store.path("tmp")):
        if "tmp/" + name not in kept:
            _remove(store, "tmp/" + name)
    referenced = {e.data for e in ix.entries.values()}
    for name in os.listdir(store.directory):
        if (name.endswith(".data") and name not in referenced) or _old_meta(name):
            _remove(store, name)


def _old_meta(name: str) -> bool:
    """0.1's per-entry metadata (``<sha256>.json``)."""
    stem, _, ext = name.partition(".")
    return ext == "json" and len(stem) == 64 and all(c in "0123456789abcdef" for c in stem)


def _remove(store: CacheStore, name: str) -> bool:
    """Unlink ``name`` if no process holds it locked; whether it was."""
    try:
        fd = os.open(store.path(name), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if not try_lock(fd):
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(store.path(name))
        return True
    finally:
        os.close(fd)
