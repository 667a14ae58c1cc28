"""``twistd tftp``: build the service the checked options describe.

As in ``twisted/names/tap.py``: :class:`~txfbtftp._daemon.options.Options`
validates, :func:`makeService` builds.  The backends are built here (no I/O:
the service starts them), then the :class:`~txfbtftp.TFTPService`, and
around it, in start order: the worker pool (``--workers``, which binds every
process's listening sockets while the process is still privileged), the
TFTP service, the metrics web server, and the signal handlers.  A failure to
start is one line and an exit status (:mod:`txfbtftp._daemon.startup`).
"""
from __future__ import annotations

from typing import cast

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString

from txfbtftp._daemon.build import build_tftp
from txfbtftp._daemon.options import Options as CheckedOptions
from txfbtftp._daemon.options import TwistdOptions as Options
from txfbtftp._daemon.signals import Signals
from txfbtftp._daemon.startup import guard, preload
from txfbtftp._observe.logs import set_level
from txfbtftp._observe.metrics import Metrics, MetricsService
from txfbtftp._types import IPoolReactor, IServerReactor

#: twistd's plugin system looks up ``Options`` and ``makeService`` here.
__all__ = ["Options", "makeService"]


def makeService(options: CheckedOptions) -> IService:
    """The services ``twistd tftp`` runs, in start order."""
    from twisted.internet import reactor as _reactor  # the application's reactor, chosen by twistd
    reactor = cast(IServerReactor, _reactor)
    preload()  # before twistd chroots and drops privileges
    if options["verbose"]:
        set_level("debug")
    metrics = Metrics(path_classes=options["path_classes"]) if options["metrics"] else None
    tftp = build_tftp(options, reactor, metrics)
    services: list[IService] = []
    pool = None
    if options["workers"] > 1:
        from txfbtftp._daemon.pool import WorkerPool
        pool = WorkerPool(cast(IPoolReactor, reactor), options, tftp)
        services.append(pool)
    services.append(tftp)
    if metrics is not None:
        services.append(MetricsService(serverFromString(reactor, options["metrics"]), metrics.registry))
    services.append(Signals(reactor, tftp, pool.signal if pool is not None else None))
    return guard(*services, twistd=options.parent)

