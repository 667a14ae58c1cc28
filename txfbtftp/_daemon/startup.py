"""Start-up errors as an operator expects them: one line, and an exit status.

A mistake in the options, a port in use, a root that is missing: each ends
the process with one line naming the problem and a status from
``sysexits.h``, the ones tftpd-hpa uses where it has one, never a
traceback.  :class:`Guarded` wraps the daemon's services and turns what
their start raises into that; :func:`exit_with` is the one way out.  A
daemon (``twistd`` without ``-n``) has already left its terminal when its
services start: there the line also goes to the twistd that waits for
the start on a pipe, which prints it and exits 1 (its own contract), and
the pid file is removed.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from twisted.application.service import IService, MultiService
from twisted.internet.error import CannotListenError

from txfbtftp._interfaces import Unavailable, Unwritable
from txfbtftp._observe.logs import log

EX_USAGE = 64        # a bad option (tftpd-hpa: 64)
EX_NOINPUT = 66      # a root, template directory or rule file missing or unreadable (tftpd-hpa: 66)
EX_NOUSER = 67       # no such user (tftpd-hpa: 67)
EX_SOFTWARE = 70     # a bug: the traceback is in the log
EX_OSERR = 71        # cannot bind the port (tftpd-hpa: 71)
EX_CANTCREAT = 73    # a cache directory or upload root not writable
EX_NOPERM = 77       # a privileged port without the privilege
EX_CONFIG = 78       # any other configuration the backends refuse


class StartupError(Exception):
    """A start that cannot go on: ``message`` for the operator, ``code`` for the shell."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def exit_with(message: str, code: int) -> NoReturn:
    """One line on the original standard error (twistd may have redirected
    ``sys.stderr`` into the log), one in the log, and the exit status."""
    log.error("{message}", message=message)
    stream = sys.__stderr__ or sys.stderr
    stream.write("txfbtftp: %s\n" % message)
    stream.flush()
    raise SystemExit(code)


#: What Python imports lazily while serving (``encodings.idna``: the first
#: name lookup of an ``http:`` origin), and the modules serving uses.
_LAZY = ("encodings.idna", "txfbtftp", "twisted.internet.unix", "twisted.internet.udp", "twisted.internet.tcp",
         "twisted.web.client", "twisted.python.threadpool", "twisted._threads")


def preload(*names: str) -> None:
    """Import now what serving will import later: after twistd chroots, or
    drops to a user who cannot read the Python installation, it cannot."""
    import importlib
    for name in _LAZY + names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # not on this platform


def classify(error: BaseException) -> StartupError:
    """What an exception raised while starting means to the operator."""
    if isinstance(error, StartupError):
        return error
    if isinstance(error, CannotListenError):
        cause = error.socketError
        where = "[%s]:%s" % (error.interface, error.port) if ":" in str(error.interface) else "%s:%s" % (
            error.interface or "*", error.port)
        return _bind_error(where, cause)
    if isinstance(error, OSError) and error.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
        return _bind_error("the listening port", error)
    if isinstance(error, Unavailable):
        return StartupError(str(error), EX_NOINPUT)
    if isinstance(error, Unwritable):
        return StartupError(str(error), EX_CANTCREAT)
    if isinstance(error, ValueError):
        return StartupError(str(error), EX_CONFIG)
    return StartupError("cannot start: %s: %s (the traceback is in the log)" % (type(error).__name__, error),
                        EX_SOFTWARE)


def _bind_error(where: str, cause: BaseException) -> StartupError:
    code = getattr(cause, "errno", None)
    if code == errno.EADDRINUSE:
        return StartupError("cannot listen on %s: address already in use" % where, EX_OSERR)
    if code == errno.EACCES:
        return StartupError("cannot listen on %s: permission denied (ports below 1024 need root or "
                            "CAP_NET_BIND_SERVICE)" % where, EX_NOPERM)
    if code == errno.EADDRNOTAVAIL:
        return StartupError("cannot listen on %s: no such address on this host" % where, EX_OSERR)
    return StartupError("cannot listen on %s: %s" % (where, getattr(cause, "strerror", None) or cause), EX_OSERR)


class Guarded(MultiService):
    """The daemon's services, started in order; a failure exits cleanly."""

    #: twistd's own options, when twistd started it.
    twistd: Mapping[str, Any] | None = None

    def privilegedStartService(self) -> None:
        self._guard(super().privilegedStartService)

    def startService(self) -> None:
        self._guard(super().startService)

    def _guard(self, start: Callable[[], None]) -> None:
        try:
            start()
        except SystemExit:
            raise
        except BaseException as e:
            problem = classify(e)
            if problem.code == EX_SOFTWARE:
                log.failure("start-up failed")
            if self.twistd is not None:
                _tell_twistd(self.twistd, str(problem))
            exit_with(str(problem), problem.code)


def _tell_twistd(config: Mapping[str, Any], message: str) -> None:
    """The start failed: tell the twistd waiting for a daemon's start (the
    status pipe takes at most 100 bytes, "1 " and the reason), and drop the
    pid file."""
    pipe = config.get("statusPipe")
    if pipe is not None:
        with contextlib.suppress(OSError):
            os.write(pipe, ("1 " + message).encode("utf-8", "replace")[:100])
            os.close(pipe)
    pidfile = config.get("pidfile")  # ours: twistd refuses to start over a live one
    if pidfile:
        with contextlib.suppress(OSError):
            os.unlink(pidfile)


def guard(*services: IService, twistd: Mapping[str, Any] | None = None) -> Guarded:
    top = Guarded()
    top.twistd = twistd
    for service in services:
        service.setServiceParent(top)
    return top
