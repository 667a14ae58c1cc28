"""The reactors txfbtftp needs, named by the Twisted interfaces they provide.

Library code never imports the global reactor: every class takes the one it
runs on.  These interfaces exist for type checking only (as treq's
``_types`` does); any reactor providing the listed interfaces will do, and
a :class:`twisted.internet.task.Clock` is enough for a session's timers.
"""
from __future__ import annotations

from twisted.internet.interfaces import (IReactorCore, IReactorFDSet, IReactorFromThreads,
                                         IReactorPluggableNameResolver, IReactorSocket, IReactorTCP,
                                         IReactorThreads, IReactorTime, IReactorUDP)


class IServerReactor(IReactorTime, IReactorFDSet, IReactorCore, IReactorFromThreads, IReactorSocket):
    """What a :class:`~txfbtftp.TFTPService` runs on: timers, file
    descriptors (the listening ports, the session sockets' poller), system
    events, calls from signal handlers, and adopted sockets (a worker's
    report channel)."""


class IHTTPReactor(IReactorTCP, IReactorTime, IReactorPluggableNameResolver, IReactorThreads):
    """What an ``http:`` origin and its cache run on: connections, timers,
    name resolution, and a thread pool for syncing files."""


class IPoolReactor(IReactorTime, IReactorSocket):
    """What the ``--workers`` supervisor runs on."""


class IClientReactor(IReactorUDP, IReactorTime, IReactorPluggableNameResolver):
    """What the client (:mod:`txfbtftp.client`) runs on: a UDP port per
    transfer, timers, and name resolution for host names."""
