"""The cache's directory, shared by every process that serves from it.

The directory holds ``index.json`` (:mod:`~txfbtftp._backends.http.index`:
the entries and the fills in progress), the bodies ``<h>.<token>.data``
(``<h>`` the SHA-256 of the origin's key for the path; a new token per
fetch, so replacing an entry is a rename and old readers keep the old file
through their descriptor), the fills' temporary files under ``tmp/``, and
the ``lock`` and ``users`` files (:mod:`~txfbtftp._backends.http.locks`).

Every change is one transaction on the index under the directory lock:
claiming a fill (its temporary file is created and locked in the same
transaction, so the index names it from the moment it exists until it is
committed or given up), setting room aside for it (evicting first,
:mod:`~txfbtftp._backends.http.space`), committing it (synced in a thread
first, then renamed into place), giving it up, revalidating, removing.

Start-up removes only what no live process holds: temporary files nobody
has locked, and bodies the index does not name.  A fill whose filler died
is left to the processes following it, which take it over (or to the next
fill short of room, which drops it), unless the process starting is alone
(no other holds ``users``): then it is removed, and each entry's SHA-256 is
checked in the background
(:mod:`~txfbtftp._backends.http.verify`).  Entries are served at once:
a body whose size or modification time is not the one recorded is dropped
at start-up (a write changes the time at least), and silent damage, which
changes neither, is what the background check is for.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from txfbtftp._backends.fs import FileReader, FilesystemBackend
from txfbtftp._backends.http import space
from txfbtftp._backends.http.index import Entry, Fill, Index
from txfbtftp._backends.http.locks import DirectoryLock, share, try_lock, unlock
from txfbtftp._backends.http.verify import Verifier, sha256_of
from txfbtftp._observe.logs import log
from txfbtftp._protocol import errors
from txfbtftp._types import IHTTPReactor

@dataclass
class Claim:
    """A fill's temporary file, opened: ours to fill (``mine``, its lock
    held: a new one, or one whose filler is gone) or another process's."""

    fd: int
    part: str
    fill: Fill
    mine: bool


class CacheStore:
    """One directory's entries and fills, as every process sees them."""

    def __init__(self, directory: str, reactor: IHTTPReactor, max_size: int,
                 clock: Callable[[], float]) -> None:
        self.directory = os.path.realpath(directory)
        self.max_size = max_size
        self.cold = False
        self._reactor = reactor
        self._clock = clock
        self._tmp = os.path.join(self.directory, "tmp")
        self.lock = DirectoryLock(os.path.join(self.directory, "lock"))
        self.index = Index(os.path.join(self.directory, "index.json"), self.lock)
        self.verifier = Verifier(self, reactor)
        self._files = FilesystemBackend(self.directory)
        self._users = -1

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    # -- start and stop -------------------------------------------------------------
    def load(self) -> None:
        """Create the directory if need be, join its users, tidy what nobody holds."""
        os.makedirs(self._tmp, exist_ok=True)
        self._files.start()
        self.lock.open()
        self._users = os.open(self.path("users"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.cold = try_lock(self._users)
        share(self._users)
        ix = self.index
        try:
            with ix.update():
                space.tidy(self, ix, self.cold)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            log.warn("cache {dir}: cannot tidy it now: {err}", dir=self.directory, err=e)  # served all the same
        log.info("cache {dir}: {n} entries, {used} bytes{cold}", dir=self.directory, n=len(ix.entries),
                 used=self.used, cold="" if self.cold else " (shared with a running server)")
        if self.cold:
            self.verifier.start(space.by_use(self, ix.entries.values())[::-1])

    def close(self) -> Deferred[None]:
        """Stop checking, and leave the directory to its other users."""
        def closed(result: object) -> None:
            self.lock.close()
            if self._users >= 0:
                os.close(self._users)
                self._users = -1
        return self.verifier.stop().addBoth(closed)

    # -- entries --------------------------------------------------------------------
    @property
    def used(self) -> int:
        """The bytes the entries hold."""
        self.index.refresh()
        return sum(e.size for e in self.index.entries.values())

    def get(self, name: str) -> Entry | None:
        self.index.refresh()
        return self.index.entries.get(name)

    def keys(self) -> list[str]:
        """The cached keys, least recently used first."""
        self.index.refresh()
        return [e.key for e in space.by_use(self, self.index.entries.values())]

    def open(self, entry: Entry) -> FileReader | None:
        """A reader of ``entry`` (read as the filesystem backend reads, its shared
        descriptor locked shared), or None: gone meanwhile, or damaged (dropped)."""
        try:
            reader: FileReader | None = self._files.open(entry.data)
        except errors.TFTPError:
            reader = None
        if reader is not None and reader.size == entry.size:
            share(reader.fileno())
            self.touch(entry.data)
            return reader
        if reader is not None:
            reader.close()
        with contextlib.suppress(OSError), self.index.update() as ix:
            if ix.entries.get(entry.name) == entry:  # still the truth: the body is damaged
                log.warn("cache: {key!r} is damaged on disk; fetching it again", key=entry.key)
                self._drop(ix, entry)
        return None

    def touch(self, data: str) -> None:
        """Record a use in the body's access time: the order eviction follows,
        in every process (set explicitly, whatever the mount's atime policy)."""
        path = self.path(data)
        with contextlib.suppress(OSError):
            os.utime(path, ns=(time.time_ns(), os.stat(path).st_mtime_ns))

    def remove(self, entry: Entry) -> None:
        """Drop ``entry`` if the index still has its body (404 from the origin, a failed check)."""
        with self.index.update() as ix:
            now = ix.entries.get(entry.name)
            if now is not None and now.data == entry.data:
                self._drop(ix, now)

    def _drop(self, ix: Index, entry: Entry) -> None:
        del ix.entries[entry.name]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(entry.data))

    # -- fills ----------------------------------------------------------------------
    def claim(self, key: str, name: str, fresh: Callable[[Entry], bool]) -> Entry | Claim:
        """A fresh entry that appeared meanwhile, or the fill of ``name``: another
        process's to follow, or ours (a new one, or one whose filler is gone)."""
        fd, path = -1, ""
        try:
            with self.index.update() as ix:
                entry = ix.entries.get(name)
                if entry is not None and fresh(entry):
                    return entry
                fill = ix.fills.get(name)
                if fill is not None:
                    fd = self._open_part(fill.part)
                    if fd >= 0:
                        return Claim(fd, fill.part, fill, try_lock(fd))
                    del ix.fills[name]
                fd, path = tempfile.mkstemp(prefix=name[:16] + ".", suffix=".part", dir=self._tmp)
                try_lock(fd)  # a new file: nobody else holds it
                part = os.path.relpath(path, self.directory)
                fill = ix.fills[name] = Fill(key, part)
        except BaseException:
            if path:  # the index does not name it
                os.close(fd)
                os.unlink(path)
            raise
        return Claim(fd, part, fill, True)

    def _open_part(self, part: str) -> int:
        try:
            return os.open(self.path(part), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return -1

    def follow(self, name: str, fd: int, part: str) -> Fill | Entry | None:
        """What became of the fill another process was making in ``part``: still
        under way (its record), complete (the entry, now in ``fd``'s file), or
        given up (None).  Read from the index as last written."""
        self.index.refresh()
        return self._fate(self.index, name, fd, part)

    def take_over(self, name: str, fd: int, part: str) -> Fill | Entry | None:
        """Called holding ``fd``'s lock, which a live filler never lets go while
        its record stands: the record (the fill is ours now), the entry it
        became, or None.  The lock is kept only for a fill; shared for an entry."""
        with self.index.update() as ix:
            fate = self._fate(ix, name, fd, part)
        if isinstance(fate, Entry):
            share(fd)
        elif fate is None:
            unlock(fd)
        return fate

    def _fate(self, ix: Index, name: str, fd: int, part: str) -> Fill | Entry | None:
        mine = os.fstat(fd).st_ino
        fill = ix.fills.get(name)
        if fill is not None and fill.part == part and _inode(self.path(part)) == mine:
            return fill
        entry = ix.entries.get(name)
        if entry is not None and _inode(self.path(entry.data)) == mine:
            return entry
        return None

    def reserve(self, name: str, part: str, size: int, length: int | None, etag: str | None,
                last_modified: str | None, least: int | None = None) -> int | None:
        """Set ``size`` bytes aside for the fill in ``part``, or as many as are
        free if that is ``least`` or more (see :func:`space.make_room
        <txfbtftp._backends.http.space.make_room>`: short of ``least``, it
        evicts), recording the origin's answer for the processes following.
        The bytes set aside; None if ``least`` cannot be had."""
        with self.index.update() as ix:
            fill = ix.fills.get(name)
            if fill is None or fill.part != part:
                return None
            granted = space.make_room(self, ix, name, size, least)
            if granted is None:
                return None
            ix.fills[name] = dataclasses.replace(fill, size=granted, answered=True, length=length, etag=etag,
                                                 last_modified=last_modified)
        return granted

    def commit(self, key: str, name: str, fd: int, part: str, size: int, sha256: str | None,
               etag: str | None, last_modified: str | None) -> Deferred[bool]:
        """Make the complete body in ``part`` an entry.  Syncing (and hashing a
        body that was taken over midway) is done in a thread: an fsync of a
        large file would stall every session.  Fires with whether the entry
        was stored (a failure is logged and the fill given up)."""
        def sync() -> str:
            os.fsync(fd)
            return sha256 or sha256_of(self.path(part))

        def store(digest: str) -> bool:
            data = "%s.%s.data" % (name, secrets.token_hex(6))
            old = None
            with self.index.update() as ix:
                fill = ix.fills.get(name)
                if fill is None or fill.part != part:
                    raise OSError("the fill was removed meanwhile")
                os.rename(self.path(part), self.path(data))
                try:
                    old = ix.entries.get(name)
                    ix.entries[name] = Entry(key, name, data, size, digest, etag, last_modified, self._clock(),
                                             os.fstat(fd).st_mtime_ns)
                    del ix.fills[name]
                except BaseException:
                    os.rename(self.path(data), self.path(part))
                    raise
            if old is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(old.data))
            share(fd)  # this process's readers still read it: not to be evicted
            self.touch(data)
            return True

        def failed(failure: object) -> bool:
            log.warn("cache: cannot store {key!r}: {err}", key=key, err=getattr(failure, "value", failure))
            self.give_up(name, part)
            return False

        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), sync)
        return d.addCallback(store).addErrback(failed)

    def give_up(self, name: str, part: str, revalidated: dict[str, str | None] | None = None) -> Entry | None:
        """End the fill in ``part`` without an entry: its file goes (readers keep
        theirs) and so does its record.  With ``revalidated`` (the origin said
        304: its ``etag`` and ``last_modified``) the entry is marked current.
        The entry, if there is one."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(part))
        try:
            with self.index.update() as ix:
                fill = ix.fills.get(name)
                if fill is not None and fill.part == part:
                    del ix.fills[name]
                entry = ix.entries.get(name)
                if entry is not None and revalidated is not None:
                    entry = ix.entries[name] = dataclasses.replace(
                        entry, validated=self._clock(), etag=revalidated.get("etag") or entry.etag,
                        last_modified=revalidated.get("last_modified") or entry.last_modified)
                return entry
        except OSError as e:
            log.warn("cache: cannot update the index: {err}", err=e)
            return self.index.entries.get(name)


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None
