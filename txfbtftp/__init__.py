"""txfbtftp: a Twisted-based, pluggable TFTP server framework for network boot.

Everything an application needs is importable from here; the modules behind
it are private.  Run a server::

    from twisted.internet import reactor
    from txfbtftp import FilesystemBackend, TFTPService

    TFTPService(FilesystemBackend("/srv/tftp"), reactor, port=6969).startService()
    reactor.run()

Write a backend by providing :class:`IBackend` (reads) or
:class:`IWritableBackend` (reads and uploads), and test it without sockets
with :mod:`txfbtftp.testing`.  Fetch or send a file as a client with
:func:`get` and :func:`put` (:mod:`txfbtftp.client`)::

    result = await get(reactor, "tftp://192.0.2.1/pxelinux.0", windowsize=16)
"""
from txfbtftp._backends import from_spec as backend_from_spec
from txfbtftp._backends import register as register_backend
from txfbtftp._backends.chain import ChainBackend
from txfbtftp._backends.fs import FilesystemBackend
from txfbtftp._backends.http.backend import HTTPBackend
from txfbtftp._backends.http.cache import CacheBackend
from txfbtftp._backends.http.origin import HTTPOrigin
from txfbtftp._backends.memory import BytesReader, MemoryBackend
from txfbtftp._backends.remap import RemapBackend, load_rules, parse_rules
from txfbtftp._backends.template import TemplateBackend
from txfbtftp._interfaces import (Address, ICounting, ILifecycle, IBackend, IReader, IWritableBackend, IWriter,
                                  TransferRequest)
from txfbtftp._observe.logs import json_observer
from txfbtftp._observe.metrics import Metrics, MetricsService, PathClasses
from txfbtftp._observe.records import REASONS, SessionRecord
from txfbtftp._observe.stats import ServerStats, log_server_stats
from txfbtftp._protocol.errors import (AccessViolation, DiskFull, FileExists, FileNotFound, OptionsRefused,
                                       ServerBusy, TFTPError, TFTPTimeout, Unsupported)
from txfbtftp._protocol.options import Limits
from txfbtftp._protocol.schedule import Schedule
from txfbtftp._server.access import AccessRules
from txfbtftp._server.config import ServerConfig
from txfbtftp._server.dispatcher import TFTPProtocol
from txfbtftp._server.service import TFTPService
from txfbtftp._version import __version__
from txfbtftp.client import TFTPURL, ClientResult, get, put

__all__ = [
    "__version__",
    # Serving
    "TFTPService", "TFTPProtocol", "ServerConfig", "Limits", "Schedule", "AccessRules",
    # The backend seam
    "IBackend", "IWritableBackend", "IReader", "IWriter", "ILifecycle", "ICounting", "TransferRequest",
    "Address",
    # Errors a backend raises (and the client's transfers fail with)
    "TFTPError", "FileNotFound", "AccessViolation", "DiskFull", "Unsupported", "FileExists",
    "OptionsRefused", "ServerBusy", "TFTPTimeout",
    # Built-in backends
    "FilesystemBackend", "MemoryBackend", "BytesReader", "ChainBackend", "RemapBackend", "load_rules",
    "parse_rules", "TemplateBackend", "HTTPOrigin", "HTTPBackend", "CacheBackend", "register_backend",
    "backend_from_spec",
    # Observing
    "SessionRecord", "REASONS", "ServerStats", "log_server_stats", "Metrics", "MetricsService",
    "PathClasses", "json_observer",
    # The client
    "get", "put", "ClientResult", "TFTPURL",
]
