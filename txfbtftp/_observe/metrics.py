"""Prometheus metrics from session records, and a ``/metrics`` web resource.

Labels are a bounded set on purpose: ``direction`` (read, write),
``outcome`` (:data:`~txfbtftp._observe.records.REASONS`), ``mode`` (octet, netascii,
other) and ``path_class``.  Never a client address or a file name: a boot
farm has thousands of both, and each label value is a time series.  Paths
are reduced to a class by :class:`PathClasses`, an operator-chosen list of
``REGEX=NAME`` rules; without rules every path is ``all``.

The metrics live in a registry of their own (or one the application gives),
never prometheus_client's global one, so several servers can share a process.
The web resource renders in the reactor thread: prometheus_client's own
Twisted resource runs a WSGI app in the global reactor's thread pool, which a
library given its reactor must not assume.
"""
from __future__ import annotations

import re
from typing import Any
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from txfbtftp._observe.logs import log
from txfbtftp._observe.records import SessionRecord
from txfbtftp._observe.stats import ServerStats

LABELS = ("direction", "outcome", "mode", "path_class")
#: Whole transfers: a config file in milliseconds, a kernel over a slow link in minutes.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Request to the client's first answer: backend latency plus a round trip.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_MODES = ("octet", "netascii")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")

Rule = str | tuple[str, str]


class PathClasses:
    """Maps a requested path to one of a few names: the first rule that matches wins.

    A rule is ``"REGEX=NAME"`` (split at the last ``=``) or a ``(regex,
    name)`` pair; the regex is searched for anywhere in the path, so anchor it
    when that matters.  Unmatched paths are ``other``; with no rules at all,
    everything is ``all``.
    """

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: list[tuple[Any, str]] = []
        for rule in rules:
            if isinstance(rule, str):
                pattern, sep, name = rule.rpartition("=")
                if not sep or not pattern:
                    raise ValueError("path class %r: expected REGEX=NAME" % rule)
            else:
                pattern, name = rule
            if not _NAME.match(name):
                raise ValueError("path class name %r: use letters, digits and _ . : -" % name)
            try:
                self.rules.append((re.compile(pattern), name))
            except re.error as e:
                raise ValueError("path class %r: bad regular expression: %s" % (pattern, e)) from None
        self.default = "other" if self.rules else "all"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([name for _, name in self.rules] + [self.default]))

    def __call__(self, path: str) -> str:
        for regex, name in self.rules:
            if regex.search(path):
                return name
        return self.default


class Metrics:
    """txfbtftp's metrics: observe records with :meth:`observe`, watch servers with :meth:`attach`.

    ``tftp_sessions_total``, ``tftp_transfer_bytes_total`` (payload, each byte
    once), ``tftp_retransmits_total``, the histograms
    ``tftp_transfer_duration_seconds`` and
    ``tftp_first_packet_latency_seconds`` (all by :data:`LABELS`); and from
    the attached servers' :class:`~txfbtftp.stats.ServerStats`:
    ``tftp_sessions_active``, ``tftp_sessions_started_total``,
    ``tftp_malformed_packets_total``, ``tftp_requests_refused_busy_total``,
    and the ``http:`` cache's ``tftp_cache_hits_total``,
    ``tftp_cache_fills_total`` and ``tftp_cache_uncached_total``.
    """

    def __init__(self, registry: CollectorRegistry | None = None,
                 path_classes: PathClasses | Sequence[Rule] = ()) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.path_class = path_classes if isinstance(path_classes, PathClasses) else PathClasses(path_classes)
        r = self.registry
        self.sessions = Counter("tftp_sessions", "Sessions ended.", LABELS, registry=r)
        self.bytes = Counter("tftp_transfer_bytes", "Payload bytes transferred, retransmissions excluded.",
                             LABELS, registry=r)
        self.retransmits = Counter("tftp_retransmits", "Packets retransmitted.", LABELS, registry=r)
        self.duration = Histogram("tftp_transfer_duration_seconds", "Session duration, request to end.",
                                  LABELS, registry=r, buckets=DURATION_BUCKETS)
        self.first_packet = Histogram("tftp_first_packet_latency_seconds",
                                      "Request to the client's first packet on the session.",
                                      LABELS, registry=r, buckets=LATENCY_BUCKETS)
        self._servers: list[ServerStats] = []
        r.register(_ServerCollector(self._servers))

    def attach(self, stats: ServerStats) -> None:
        """Export ``stats``' gauges and totals, and observe its sessions."""
        if stats not in self._servers:
            self._servers.append(stats)
            stats.session_listeners.append(self.observe)

    def observe(self, record: SessionRecord) -> None:
        labels = (record.direction, record.reason, record.mode if record.mode in _MODES else "other",
                  self.path_class(record.path))
        self.sessions.labels(*labels).inc()
        if record.bytes_transferred:
            self.bytes.labels(*labels).inc(record.bytes_transferred)
        if record.retransmits:
            self.retransmits.labels(*labels).inc(record.retransmits)
        self.duration.labels(*labels).observe(record.duration)
        if record.time_to_first_packet is not None:
            self.first_packet.labels(*labels).observe(record.time_to_first_packet)


class _ServerCollector:
    """Reads the attached servers' gauges and totals at scrape time."""

    _TOTALS = (("sessions_started", "Requests accepted (sessions created)."),
               ("malformed_packets", "Undecodable requests and stray packets on the listening port."),
               ("requests_refused_busy", "Requests refused busy: the queue was full, or no session socket would open."),
               ("requests_waiting_for_port", "Requests put back in the queue: no session port was free."),
               ("sessions_lost", "Transfers in flight in a worker process that died (--workers)."),
               ("requests_denied", "Requests ignored by the access rules."),
               ("requests_over_budget", "Requests dropped: their address has too many sessions that never answered."),
               ("packets_withheld", "Packets not sent: over the byte budget of an address that never answered."),
               ("errors_suppressed", "ERROR replies not sent (rate limit per address)."),
               ("cache_hits", "Downloads served from the http: cache."),
               ("cache_fills", "Files fetched from the origin into the http: cache."),
               ("cache_uncached", "Downloads served from the origin, not cached: too large, no room, a write error."))

    def __init__(self, servers: list[ServerStats]) -> None:
        self._servers = servers

    def collect(self) -> Iterator[Metric]:
        servers = self._servers
        yield GaugeMetricFamily("tftp_sessions_active", "Sessions in progress.",
                                value=sum(s.sessions_active for s in servers))
        for name, text in self._TOTALS:
            yield CounterMetricFamily("tftp_" + name, text, value=sum(s.totals[name] for s in servers))

    describe = collect


class MetricsResource(Resource):
    """``GET`` renders the registry in the Prometheus text format."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


class _QuietSite(Site):
    """No access log: a scrape every few seconds is not news."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


def metrics_site(registry: CollectorRegistry) -> Site:
    """A site serving ``registry`` at ``/metrics``."""
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    return _QuietSite(root)


class MetricsService(Service):
    """Serves ``/metrics`` on a stream endpoint (``serverFromString(reactor, "tcp:9469")``).

    It listens in ``privilegedStartService`` (before ``twistd`` drops
    privileges), or in ``startService`` if started without it.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, registry: CollectorRegistry) -> None:
        self.endpoint = endpoint
        self.registry = registry
        #: The listening port, once listening.
        self.port: IListeningPort | None = None
        self._starting = False
        self._early: Failure | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self.port is None:
            self._listen()

    def _listen(self) -> None:
        self._starting, self._early = True, None
        self.endpoint.listen(metrics_site(self.registry)).addCallbacks(self._listening, self._failed)
        self._starting = False
        if self._early is not None:
            early, self._early = self._early, None
            early.raiseException()  # at once, as a busy TFTP port does

    def _listening(self, port: IListeningPort) -> None:
        self.port = port

    def _failed(self, failure: Failure) -> None:
        if self._starting:
            self._early = failure
        else:
            log.failure("cannot serve metrics on {endpoint}", failure, endpoint=self.endpoint)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def as_metrics(value: Metrics | CollectorRegistry) -> Metrics:
    """``value`` itself, or new :class:`Metrics` registered in the registry ``value``."""
    return value if isinstance(value, Metrics) else Metrics(value)
