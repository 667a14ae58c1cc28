"""``twistd tftp`` options: parsed and checked here, built in :mod:`txfbtftp._daemon.tap`.

:meth:`Options.postOptions` validates every value (so a mistake is one
clear usage error before anything starts) and leaves plain values behind:
the :class:`~txfbtftp.ServerConfig`, the backend specs, the remap rules,
the metrics' path classes.  Nothing here opens a socket, a connection or a
file that serving needs.
"""
from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from txfbtftp._backends import check_spec
from txfbtftp._backends.remap import Rule, load_rules, try_rules
from txfbtftp._daemon.jail import Jail
from txfbtftp._daemon.systemd import passed_sockets
from txfbtftp._daemon.startup import EX_NOINPUT, EX_NOUSER, EX_USAGE, exit_with
from txfbtftp._interfaces import Unavailable
from txfbtftp._observe.metrics import PathClasses
from txfbtftp._protocol.options import MAX_BLKSIZE, Limits
from txfbtftp._protocol.schedule import DEFAULT_SPEC, Schedule
from txfbtftp._server import access
from txfbtftp._server.config import ServerConfig
from txfbtftp._version import __version__


def parse_size(text: str) -> int:
    """``1048576``, ``512K``, ``64M``, ``2G``."""
    t = text.strip().upper()
    mult = 1
    if t and t[-1] in "KMG":
        mult = 1024 ** ("KMG".index(t[-1]) + 1)
        t = t[:-1]
    return int(t) * mult


#: Schemes whose argument is a directory, seen differently before and after --chroot.
PATH_SCHEMES = ("fs", "template")


class OptionError(usage.UsageError):
    """A usage error with its exit status (a missing root is 66, as in tftpd-hpa)."""

    def __init__(self, message: str, code: int = EX_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    if not sep:
        raise ValueError
    return int(low), int(high)


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = ("Serve TFTP (RFC 1350, 2347-2349, 7440) from a backend. "
                "Example: twistd -n tftp --backend fs:/srv/tftp --port 6969")

    optFlags = [
        ["writable", "w", "Accept uploads (WRQ)."],
        ["overwrite", None, "Let uploads replace existing files (default: create only)."],
        ["single-port", None, "Serve every session from the listening port (NAT, containers)."],
        ["no-adaptive", None, "Retransmit on the fixed schedule only, without RTT estimation."],
        ["verbose", "v", "Log at debug level."],
        ["remap-test", None, "Read paths on stdin, print each as --remap rewrites it (or DENIED), exit."],
        ["systemd", None, "Serve the socket(s) systemd passes (socket activation: LISTEN_FDS)."],
    ]
    optParameters = [
        ["port", "p", 69, "UDP port to listen on.", int],
        ["timeouts", "t", DEFAULT_SPEC,
         "Retransmission waits in seconds: a list '1,2,4,8' or base x tries '1x6'."],
        ["rto-min", None, 0.05, "Floor of the adaptive retransmission timeout, seconds.", float],
        ["max-blksize", None, MAX_BLKSIZE, "Largest block size granted (1468 fits a 1500-byte MTU).", int],
        ["max-windowsize", None, 64, "Largest RFC 7440 window granted.", int],
        ["window-bytes", None, "128K", "Largest window in bytes (windowsize x blksize); windows are "
         "negotiated down to it (K, M suffixes)."],
        ["max-upload-size", None, None, "Largest upload accepted, bytes (K, M, G suffixes)."],
        ["port-range", None, None, "Session sockets from LOW:HIGH (for firewalls); requests wait for a free one."],
        ["max-sessions", None, 0, "Active transfers at most; more wait in a FIFO queue (0: no limit).", int],
        ["max-queue", None, 1024, "Requests that may wait for a slot; beyond, ERROR 0 'server busy'.", int],
        ["max-sessions-per-client", None, 0, "Active transfers per client address (0: no limit).", int],
        ["queue-wait", None, 30.0, "Seconds a queued client keeps its place without repeating its request.",
         float],
        ["max-unverified", None, 16, "Sessions at once per client address that has not answered yet "
         "(0: no limit); beyond, requests are dropped.", int],
        ["unverified-rate", None, "512K", "Bytes a second sent to one address that has not answered yet "
         "(K, M suffixes; 0: no limit)."],
        ["access", None, None, "Access rules file (allow/deny/allow-write CIDR lines), re-read on SIGHUP."],
        ["busy-poll", None, 5, "Longest time in microseconds to keep polling session sockets after traffic; "
         "less, or none, while clients answer slower than that (0: off).  Longer buys a fast lock-step "
         "client's throughput with CPU.", int],
        ["workers", None, 1, "Processes serving the port(s) together (SO_REUSEPORT).", int],
        ["shutdown-grace", None, 30.0,
         "Seconds transfers in flight may run on when the server is told to stop (SIGTERM).", float],
        ["stats-interval", None, 60.0, "Seconds between statistics lines in the log (0: none).", float],
        ["metrics", None, None, "Serve Prometheus /metrics on this endpoint, e.g. tcp:9469."],
        ["log-format", None, "text", "text, or json: one JSON object per line on standard output."],
        ["http-timeout", None, 3.0,
         "Seconds an http: origin has to answer, and the longest its body may stall.", float],
        ["cache-dir", None, None, "Cache http: files in this directory."],
        ["cache-size", None, "1G", "Most bytes the cache keeps (K, M, G suffixes)."],
        ["cache-revalidate", None, 60.0,
         "Seconds a cached file is served before the origin is asked whether it changed.", float],
        ["remap", None, None, "Rewrite requested paths with a tftpd-hpa style rule file first."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["argv"] = []
        self["interfaces"] = []
        self["backends"] = []
        self["path_class_rules"] = []
        self["rules"] = None
        self["allow"], self["deny"], self["allow-write"] = [], [], []

    def parseOptions(self, options: list[str] | None = None) -> None:
        self["argv"] = list(sys.argv[1:] if options is None else options)  # for --workers
        super().parseOptions(options)

    def opt_version(self) -> None:
        """Print txfbtftp's version and exit."""
        print("txfbtftp %s" % __version__)
        raise SystemExit(0)

    def opt_backend(self, value: str) -> None:
        """Where files come from, SCHEME:ARG (e.g. fs:/srv/tftp); repeat to chain several."""
        self["backends"].append(value)

    opt_b = opt_backend

    def opt_interface(self, value: str) -> None:
        """Address to listen on; repeat for several (default :: , dual stack)."""
        self["interfaces"].append(value.strip("[]"))

    opt_i = opt_interface

    def opt_allow(self, value: str) -> None:
        """CIDR: serve clients in this network; repeatable (see --deny for precedence)."""
        self["allow"].append(value)

    def opt_deny(self, value: str) -> None:
        """CIDR: ignore requests from this network; the longest matching prefix wins, deny on a tie."""
        self["deny"].append(value)

    def opt_allow_write(self, value: str) -> None:
        """CIDR: accept uploads only from these networks (with --writable); repeatable."""
        self["allow-write"].append(value)

    def opt_metrics_path_class(self, value: str) -> None:
        """REGEX=NAME: label matching paths NAME in metrics; repeatable, first match wins."""
        self["path_class_rules"].append(value)

    #: The chroot, when no twistd command line says it (a worker's launcher).
    chroot: str | None = None

    def postOptions(self) -> None:
        jail = self["jail"] = Jail(self.parent.get("chroot") if self.parent is not None else self.chroot)
        if self.parent is not None:
            _user_in_jail(jail, self.parent.get("uid"))
        if self["remap"]:
            self["rules"] = self._rules(jail.host(self["remap"]))
            self["remap-inside"] = jail.inside(self["remap"])
        if self["remap-test"]:
            if self["rules"] is None:
                raise usage.UsageError("--remap-test needs --remap FILE")
            raise SystemExit(try_rules(self["rules"], sys.stdin, sys.stdout))
        if not self["backends"]:
            raise usage.UsageError("--backend is required, e.g. --backend fs:/srv/tftp")
        for spec in self["backends"]:
            try:
                check_spec(_at(spec, jail.host))
            except Unavailable as e:
                raise OptionError(str(e), EX_NOINPUT) from None
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
        #: The backend specs with their directories where they are once serving.
        self["served"] = [_at(spec, jail.inside) for spec in self["backends"]]
        self["interfaces"] = [_interface(i) for i in self["interfaces"]] or ["::"]
        self["config"] = _server_config(self)
        self._access(jail)
        if self["systemd"]:
            if self["workers"] > 1:
                raise usage.UsageError("--systemd serves one socket: run one process per .socket (no --workers)")
            count = passed_sockets(os.environ)
            if count is None:
                raise usage.UsageError("--systemd: no socket was passed (LISTEN_PID/LISTEN_FDS are not set for us)")
            self["listen-fds"] = list(range(3, 3 + count))
        self._fetching()
        self._observability()

    def _access(self, jail: Jail) -> None:
        """Check the access rules; the file is read again where serving will read it."""
        try:
            for kind in ("allow", "deny", "allow-write"):
                for text in self[kind]:
                    access.network(text)
        except ValueError as e:
            raise usage.UsageError("--%s: %s" % (kind, e)) from None
        self["access-inside"] = None
        if self["access"]:
            try:
                access.read(jail.host(self["access"]))
            except Unavailable as e:
                raise OptionError(str(e), EX_NOINPUT) from None
            except ValueError as e:
                raise usage.UsageError(str(e)) from None
            self["access-inside"] = jail.inside(self["access"])

    def access_rules(self) -> access.AccessRules:
        """The rules the options give, with their file where serving reads it."""
        return access.AccessRules(self["allow"], self["deny"], self["allow-write"], self["access-inside"])

    def _fetching(self) -> None:
        """Check the settings of backends that fetch from elsewhere (http:, its cache)."""
        if self["http-timeout"] <= 0:
            raise usage.UsageError("--http-timeout must be positive")
        if self["cache-revalidate"] < 0:
            raise usage.UsageError("--cache-revalidate must not be negative")
        try:
            self["cache_size"] = parse_size(self["cache-size"])
        except ValueError:
            raise usage.UsageError("--cache-size takes a size such as 512M or 20G") from None

    def _observability(self) -> None:
        """Check the statistics, metrics and log options; ask twistd for JSON logs."""
        if self["stats-interval"] < 0:
            raise usage.UsageError("--stats-interval must not be negative")
        try:
            self["path_classes"] = PathClasses(self["path_class_rules"])
        except ValueError as e:
            raise usage.UsageError("--metrics-path-class: %s" % e) from None
        spec = self["metrics"]
        if spec is not None:
            spec = self["metrics"] = "tcp:" + spec if spec.isdigit() else spec
            try:
                serverFromString(None, spec)  # parsed again with twistd's reactor in makeService
            except (ValueError, TypeError) as e:
                raise usage.UsageError("--metrics takes an endpoint such as tcp:9469 (%s)" % e) from None
        if self["log-format"] not in ("text", "json"):
            raise usage.UsageError("--log-format is text or json")
        parent = self.parent
        if self["log-format"] == "json" and parent is not None:
            if parent.get("logger") or parent.get("logfile") not in (None, "-") or parent.get("syslog"):
                raise usage.UsageError("--log-format json writes to standard output: "
                                       "drop twistd's --logger, --logfile and --syslog")
            if not (parent.get("nodaemon") or parent.get("debug")):
                raise usage.UsageError("--log-format json writes to standard output: run twistd -n")
            parent["logger"] = "txfbtftp.json_observer"

    def backend_settings(self) -> dict[str, Any]:
        """What backend factories take, besides the reactor."""
        cache_dir = self["cache-dir"] and self["jail"].inside(self["cache-dir"])
        return dict(writable=self["writable"], overwrite=self["overwrite"], http_timeout=self["http-timeout"],
                    cache_dir=cache_dir, cache_size=self["cache_size"], cache_revalidate=self["cache-revalidate"])

    def _rules(self, path: str) -> list[Rule]:
        try:
            return load_rules(path)
        except Unavailable as e:
            raise OptionError(str(e), EX_NOINPUT) from None
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


def _server_config(o: Options) -> ServerConfig:
    """The server settings the options give, checked."""
    if not 0 <= o["port"] <= 65535:
        raise usage.UsageError("--port must be within 0..65535")
    try:
        schedule = Schedule.parse(o["timeouts"])
    except ValueError as e:
        raise usage.UsageError(str(e)) from None
    try:
        upload = parse_size(o["max-upload-size"]) if o["max-upload-size"] else None
    except ValueError:
        raise usage.UsageError("--max-upload-size takes a size such as 1048576, 512K or 64M") from None
    try:
        window = parse_size(o["window-bytes"])
        rate = parse_size(o["unverified-rate"])
    except ValueError:
        raise usage.UsageError("--window-bytes and --unverified-rate take sizes such as 128K") from None
    if rate < 0:
        raise usage.UsageError("--unverified-rate must not be negative")
    try:
        limits = Limits(o["max-blksize"], o["max-windowsize"], upload, window)
    except ValueError as e:
        raise usage.UsageError("%s (--max-blksize, --max-windowsize, --window-bytes)" % e) from None
    prange: tuple[int, int] | None = None
    if o["port-range"]:
        try:
            prange = _range(o["port-range"])
            if not 0 < prange[0] <= prange[1] <= 65535:
                raise ValueError
        except ValueError:
            raise usage.UsageError("--port-range takes LOW:HIGH, e.g. 50000:50999") from None
    if o["rto-min"] <= 0:
        raise usage.UsageError("--rto-min must be positive")
    for name in ("max-sessions", "max-queue", "max-sessions-per-client", "busy-poll", "max-unverified"):
        if o[name] < 0:
            raise usage.UsageError("--%s must not be negative" % name)
    if o["queue-wait"] <= 0:
        raise usage.UsageError("--queue-wait must be positive")
    if not 1 <= o["workers"] <= 256:
        raise usage.UsageError("--workers must be within 1..256")
    workers = o["workers"]
    for name, total in (("max-sessions", o["max-sessions"]), ("max-queue", o["max-queue"]),
                        ("port-range", prange[1] - prange[0] + 1 if prange else 0)):
        if 0 < total < workers:
            raise usage.UsageError("--%s is shared by the --workers: give at least %d" % (name, workers))
    if not 0 <= o["shutdown-grace"] <= 3600:
        raise usage.UsageError("--shutdown-grace must be within 0..3600 seconds")
    return ServerConfig(
        limits=limits, schedule=schedule, adaptive=not o["no-adaptive"],
        rto_min=o["rto-min"], port_range=prange, single_port=o["single-port"],
        busy_poll=o["busy-poll"] / 1e6, max_sessions=o["max-sessions"], max_queue=o["max-queue"],
        max_sessions_per_client=o["max-sessions-per-client"], max_queue_wait=o["queue-wait"],
        reuse_port=o["workers"] > 1, shutdown_grace=o["shutdown-grace"],
        max_unverified_per_source=o["max-unverified"], unverified_bytes_per_second=rate)


def _at(spec: str, where: Callable[[str], str]) -> str:
    """``spec`` with its directory (for :data:`PATH_SCHEMES`) mapped by ``where``."""
    scheme, sep, arg = spec.partition(":")
    if sep and scheme in PATH_SCHEMES and arg:
        return "%s:%s" % (scheme, where(arg))
    return spec


def _user_in_jail(jail: Jail, uid: int | None) -> None:
    """twistd drops privileges after it chroots and looks the user up there
    (``initgroups``): the chroot's own ``etc/passwd`` must list them."""
    if jail.root is None or uid is None:
        return
    passwd = os.path.join(jail.root, "etc", "passwd")
    try:
        with open(passwd, encoding="utf-8", errors="replace") as f:
            listed = any(line.split(":")[2:3] == [str(uid)] for line in f)
    except OSError:
        listed = False
    if not listed:
        raise OptionError("-u with --chroot %s: the user is looked up inside the chroot, and %s does not list "
                          "uid %d (copy its line from /etc/passwd, and its group's from /etc/group)"
                          % (jail.root, passwd, uid), EX_NOUSER)


def _interface(text: str) -> str:
    """An address to listen on, checked: a name is not an address."""
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        raise usage.UsageError("--interface takes an IP address (IPv4 or IPv6), not %r" % text) from None
    return text


class TwistdOptions(Options):
    """What ``twistd tftp`` parses: a mistake is one line and an exit status,
    not twistd's page of usage."""

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            exit_with(str(e), getattr(e, "code", EX_USAGE))
