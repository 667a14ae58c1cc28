"""``twistd tftp``: build the service the checked options describe.

As in ``twisted/names/tap.py``: :class:`~txfbtftp._daemon.options.Options`
validates, :func:`makeService` builds.  The backends are built here (no I/O:
the service starts them), then the :class:`~txfbtftp.TFTPService`, and with
``--metrics`` or ``--workers`` a ``MultiService`` around it with the metrics
web server and the worker pool.
"""
from __future__ import annotations

from typing import cast

from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString

from txfbtftp._backends import from_spec
from txfbtftp._backends.chain import ChainBackend
from txfbtftp._backends.remap import RemapBackend
from txfbtftp._daemon.options import Options
from txfbtftp._interfaces import IBackend
from txfbtftp._observe.logs import set_level
from txfbtftp._observe.metrics import Metrics, MetricsService
from txfbtftp._observe.stats import log_server_stats
from txfbtftp._server.service import TFTPService
from txfbtftp._types import IHTTPReactor, IPoolReactor, IServerReactor

__all__ = ["Options", "makeService", "build_backend", "build_tftp"]


def build_backend(options: Options, reactor: IHTTPReactor) -> IBackend:
    """The backend chain the options name, behind the remap rules if any."""
    settings = options.backend_settings()
    chain = [from_spec(spec, reactor=reactor, **settings) for spec in options["backends"]]
    backend: IBackend = chain[0] if len(chain) == 1 else ChainBackend(chain)
    if options["rules"] is not None:
        backend = RemapBackend(backend, options["rules"])
    return backend


def build_tftp(options: Options, reactor: IServerReactor, metrics: Metrics | None = None,
               log_stats: bool = True) -> TFTPService:
    """The TFTP service alone, as the main process (which logs the statistics)
    and every worker run it."""
    interval = options["stats-interval"]
    return TFTPService(build_backend(options, cast(IHTTPReactor, reactor)), reactor, options["port"],
                       options["interfaces"], options["config"],
                       server_stats_callback=log_server_stats if interval and log_stats else None,
                       stats_interval=interval, metrics=metrics)


def makeService(options: Options) -> IService:
    """The TFTPService; with ``--metrics`` or ``--workers``, a MultiService of it,
    the metrics web server and the worker pool."""
    from twisted.internet import reactor as _reactor  # the application's reactor, chosen by twistd
    reactor = cast(IServerReactor, _reactor)
    if options["verbose"]:
        set_level("debug")
    metrics = Metrics(path_classes=options["path_classes"]) if options["metrics"] else None
    tftp = build_tftp(options, reactor, metrics)
    if metrics is None and options["workers"] == 1:
        return tftp
    top = MultiService()
    tftp.setServiceParent(top)
    if options["workers"] > 1:
        from txfbtftp._daemon.pool import WorkerPool
        WorkerPool(cast(IPoolReactor, reactor), options["argv"], options["workers"], tftp.stats,
                   port=lambda: tftp.bound_port).setServiceParent(top)
    if metrics is not None:
        MetricsService(serverFromString(reactor, options["metrics"]), metrics.registry).setServiceParent(top)
    return top
