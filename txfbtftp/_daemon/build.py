"""Building the backends and the TFTP service the checked options describe,
for the main process and for every worker alike."""
from __future__ import annotations

import socket
from typing import cast

from txfbtftp._backends import from_spec
from txfbtftp._backends.chain import ChainBackend
from txfbtftp._backends.remap import RemapBackend
from txfbtftp._daemon.options import Options
from txfbtftp._interfaces import IBackend
from txfbtftp._observe.metrics import Metrics
from txfbtftp._observe.stats import log_server_stats
from txfbtftp._server.service import TFTPService
from txfbtftp._types import IHTTPReactor, IServerReactor


def build_backend(options: Options, reactor: IHTTPReactor) -> IBackend:
    """The backend chain the options name, behind the remap rules if any."""
    settings = options.backend_settings()
    chain = [from_spec(spec, check=False, reactor=reactor, **settings) for spec in options["served"]]
    backend: IBackend = chain[0] if len(chain) == 1 else ChainBackend(chain)
    if options["rules"] is not None:
        backend = RemapBackend(backend, options["rules"], options["remap-inside"])
    return backend


def build_tftp(options: Options, reactor: IServerReactor, metrics: Metrics | None = None,
               log_stats: bool = True, listeners: list[socket.socket] | None = None, index: int = 0) -> TFTPService:
    """The TFTP service alone, as the main process (``index`` 0, which logs
    the statistics) and every worker run it, each with its part of the limits."""
    interval = options["stats-interval"]
    if listeners is None:
        listeners = [socket.socket(fileno=fd) for fd in options.get("listen-fds", ())]
    return TFTPService(build_backend(options, cast(IHTTPReactor, reactor)), reactor, options["port"],
                       options["interfaces"], options["config"].share(index, options["workers"]),
                       server_stats_callback=log_server_stats if interval and log_stats else None,
                       stats_interval=interval, metrics=metrics, listeners=listeners,
                       access=options.access_rules())
