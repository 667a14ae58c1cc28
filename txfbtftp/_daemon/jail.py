"""Paths under ``twistd --chroot DIR``, in the terms of the moment.

Options are checked before twistd chroots (a directory is looked for where
it is then) and backends start after (they open it where it is now).  The
habit of ``in.tftpd -s DIR`` is ``--chroot DIR --backend fs:DIR``: a path
under the chroot is taken as the host's path and served as the same place
seen from inside (``DIR`` itself is ``/``); any other path is taken to be
in the chroot's terms already.
"""
from __future__ import annotations

import os


class Jail:
    """The chroot directory, or None for none."""

    def __init__(self, root: str | None) -> None:
        self.root = os.path.abspath(root) if root else None

    def _under(self, path: str) -> str | None:
        """``path`` relative to the chroot, if it is under it."""
        if self.root is None or not os.path.isabs(path):
            return None
        path = os.path.abspath(path)
        if path == self.root:
            return ""
        if path.startswith(self.root.rstrip("/") + "/"):
            return os.path.relpath(path, self.root)
        return None

    def host(self, path: str) -> str:
        """Where ``path`` is before the chroot."""
        if self.root is None or self._under(path) is not None or not os.path.isabs(path):
            return path
        return os.path.join(self.root, path.lstrip("/"))

    def inside(self, path: str) -> str:
        """Where ``path`` is after the chroot."""
        rel = self._under(path)
        if rel is None:
            return path
        return "/" + rel if rel else "/"
