"""The cache's index: one JSON file, the truth every process shares.

``index.json`` lists the entries (complete bodies) and the fills in
progress.  It is only ever replaced whole (written to ``index.json.tmp``,
then renamed over it), and only under the directory lock, after reading it
again: each change is a read-modify-write no other process interleaves
with.  A process keeps the last copy it read and reads the file again when
its identity (inode, size, modification time) has changed, or when it was
modified so recently that a change within the clock's granularity could
hide (as git does with its index), so a request costs one ``stat``.

The index is not synced: after a power cut it may be older than the bodies
on disk; a cold start then removes the bodies it does not name, and drops
the entries whose body is missing or not as recorded.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from txfbtftp._backends.http.locks import DirectoryLock
from txfbtftp._observe.logs import log

_VERSION = 2
#: A file modified this recently (ns) is read again even if it looks unchanged.
_RACY = 100_000_000


def entry_name(key: str) -> str:
    """The name of ``key``'s entry: its SHA-256."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Entry:
    """A complete body (``data``, in the directory) and what is known about it."""

    key: str
    name: str
    data: str
    size: int
    sha256: str
    etag: str | None
    last_modified: str | None
    #: When the origin last confirmed it (the cache's clock).
    validated: float
    #: The body's modification time when it was stored: a body changed since
    #: is not served.
    mtime_ns: int


@dataclass(frozen=True)
class Fill:
    """A body being fetched into ``part`` (under ``tmp/``) by the process
    holding that file's lock."""

    key: str
    part: str
    #: The bytes set aside for it: the announced length (or, without one,
    #: what has been set aside so far).
    size: int | None = None
    #: The origin has answered 200 and the body is being written.
    answered: bool = False
    #: The announced length, when there is one.
    length: int | None = None
    etag: str | None = None
    last_modified: str | None = None


@dataclass
class Index:
    """The index as last read; :meth:`update` is its only writer."""

    path: str
    lock: DirectoryLock
    entries: dict[str, Entry] = field(default_factory=dict)
    fills: dict[str, Fill] = field(default_factory=dict)
    _stamp: tuple[int, int, int] | None = None

    def refresh(self) -> None:
        """Read the file again if it may have changed since it was read."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._stamp is not None:
                self.entries, self.fills, self._stamp = {}, {}, None
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp and time.time_ns() - st.st_mtime_ns > _RACY:
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                raw = json.load(f)
            if raw.get("version") != _VERSION:
                raise ValueError("version %r" % raw.get("version"))
            entries = {name: Entry(**_known(Entry, e)) for name, e in raw["entries"].items()}
            fills = {name: Fill(**_known(Fill, e)) for name, e in raw["fills"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warn("cache index {path} unreadable ({err}): starting it afresh", path=self.path, err=e)
            entries, fills = {}, {}
        self.entries, self.fills, self._stamp = entries, fills, stamp

    @contextlib.contextmanager
    def update(self) -> Iterator[Index]:
        """``with index.update() as ix:`` the directory locked, the index read
        again; changed in the block, it is written when the block ends (an
        exception, or a failure to write, leaves the file as it was and the
        next read takes it from the file)."""
        with self.lock:
            self.refresh()
            before = self._snapshot()
            try:
                yield self
                if self._snapshot() != before:
                    self._write()
            except BaseException:
                self._stamp = None
                raise

    def _snapshot(self) -> tuple[dict[str, Entry], dict[str, Fill]]:
        return dict(self.entries), dict(self.fills)  # records are frozen: changing one replaces it

    def _write(self) -> None:
        entries = {k: asdict(v) for k, v in self.entries.items()}
        fills = {k: asdict(v) for k, v in self.fills.items()}
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"version": _VERSION, "entries": entries, "fills": fills}, f)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        st = os.stat(self.path)
        self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)


def _known(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in raw.items() if k in names}
