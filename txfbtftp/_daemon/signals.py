"""What the daemon does on SIGHUP and SIGTERM.

SIGHUP re-reads what can be re-read (the backends', through
:meth:`~txfbtftp.TFTPService.reload`: remap rules, templates' ``.clients``)
without touching a session, reopens the log file (for logrotate's
``postrotate``), passes the signal to the workers and logs what it did; a
configuration that no longer parses is refused with one line and the old
one kept; a log file that cannot be reopened (the serving user may not
write its directory) stays open as it was, with a warning.  The workers
hear of it whatever else went wrong.  SIGTERM, and SIGINT alike, stop the
way ``twistd`` does, through the services' ``stopService``, which drains
(see :mod:`txfbtftp._server.drain`); a second one ends the transfers still
running at once, even before the drain has begun.
"""
from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.application.service import Service
from twisted.logger import globalLogPublisher
from twisted.python.logfile import LogFile

from txfbtftp._observe.logs import log
from txfbtftp._server.service import TFTPService
from txfbtftp._types import IServerReactor


class Signals(Service):
    """Installs the handlers once the reactor runs (after Twisted's own)."""

    def __init__(self, reactor: IServerReactor, tftp: TFTPService,
                 forward: Callable[[str], None] | None = None) -> None:
        self.reactor = reactor
        self.tftp = tftp
        #: Passes a signal on to the worker processes, by name.
        self.forward = forward
        self.stopping = False

    def startService(self) -> None:
        super().startService()
        self._previous: dict[int, Any] = {}
        self.reactor.callWhenRunning(self._install)

    def stopService(self) -> None:
        super().stopService()
        if self.stopping:
            return  # stopping on SIGTERM: a second one must still reach terminate()
        for number, handler in self._previous.items():
            if signal.getsignal(number) == self._caught:
                signal.signal(number, handler)

    def _install(self) -> None:
        if self.running:
            for number in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._caught)

    def _caught(self, number: int, frame: FrameType | None) -> None:
        if number == signal.SIGHUP:
            self.reactor.callFromThread(self.hangup)
        else:
            self.reactor.callFromThread(self.terminate, signal.Signals(number).name)

    def hangup(self) -> None:
        try:
            try:
                done = self.tftp.reload()
            except ValueError as e:
                log.warn("SIGHUP: not reloaded, the old configuration stays: {err}", err=e)
            else:
                for what in done:
                    log.info("SIGHUP: reloaded {what}", what=what)
            reopened = reopen_logs()
            if reopened:
                log.info("SIGHUP: reopened {files}", files=", ".join(reopened))
        finally:
            if self.forward is not None:
                self.forward("HUP")

    def terminate(self, name: str = "SIGTERM") -> None:
        if not self.stopping:
            self.stopping = True
            log.info("{name}: stopping; transfers in flight may finish (a second {name} ends them)", name=name)
            self.reactor.stop()
            return
        log.info("{name} again: ending the transfers still running", name=name)
        self.tftp.stop_now()
        if self.forward is not None:
            self.forward("TERM")


def reopen_logs() -> list[str]:
    """Reopen the log files twistd writes (``--logfile``), so a rotated file
    is let go of; the names reopened."""
    reopened = []
    for observer in list(getattr(globalLogPublisher, "_observers", [])):
        target: Any = getattr(observer, "_outFile", None)
        if isinstance(target, LogFile):
            # LogFile.reopen closes before it opens: see first that it can.
            try:
                os.close(os.open(target.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640))
            except OSError as e:
                log.warn("SIGHUP: cannot reopen {path} ({err}); still writing to the file open before",
                         path=target.path, err=e.strerror or e)
                continue
            target.reopen()
            reopened.append(target.path)
    return reopened
