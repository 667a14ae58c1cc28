"""``twistd tftp``: parse options, build a :class:`TFTPService`.  Nothing else."""
from __future__ import annotations

from typing import Any, Optional, Tuple

from twisted.python import usage

from txfbtftp import backends
from txfbtftp.config import ServerConfig
from txfbtftp.options import MAX_BLKSIZE, Limits
from txfbtftp.schedule import DEFAULT_SPEC, Schedule
from txfbtftp.service import TFTPService


def _size(text: str) -> int:
    """``1048576``, ``512K``, ``64M``, ``2G``."""
    t = text.strip().upper()
    mult = 1
    if t and t[-1] in "KMG":
        mult = 1024 ** ("KMG".index(t[-1]) + 1)
        t = t[:-1]
    return int(t) * mult


def _range(text: str) -> Tuple[int, int]:
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
    ]
    optParameters = [
        ["backend", "b", None, "Where files come from, SCHEME:ARG (e.g. fs:/srv/tftp)."],
        ["port", "p", 69, "UDP port to listen on.", int],
        ["timeouts", "t", DEFAULT_SPEC,
         "Retransmission waits in seconds: a list '1,2,4,8' or base x tries '1x6'."],
        ["rto-min", None, 0.05, "Floor of the adaptive retransmission timeout, seconds.", float],
        ["max-blksize", None, MAX_BLKSIZE, "Largest block size granted (1468 fits a 1500-byte MTU).", int],
        ["max-windowsize", None, 64, "Largest RFC 7440 window granted.", int],
        ["max-upload-size", None, None, "Largest upload accepted, bytes (K, M, G suffixes)."],
        ["port-range", None, None, "Session sockets from LOW:HIGH (for firewalls)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["interfaces"] = []

    def opt_interface(self, value: str) -> None:
        """Address to listen on; repeat for several (default :: , dual stack)."""
        self["interfaces"].append(value.strip("[]"))

    opt_i = opt_interface

    def postOptions(self) -> None:
        if not self["backend"]:
            raise usage.UsageError("--backend is required, e.g. --backend fs:/srv/tftp")
        if not 0 <= self["port"] <= 65535:
            raise usage.UsageError("--port must be within 0..65535")
        try:
            self["schedule"] = Schedule.parse(self["timeouts"])
        except ValueError as e:
            raise usage.UsageError(str(e))
        try:
            upload = _size(self["max-upload-size"]) if self["max-upload-size"] else None
        except ValueError:
            raise usage.UsageError("--max-upload-size takes a size such as 1048576, 512K or 64M")
        try:
            self["limits"] = Limits(self["max-blksize"], self["max-windowsize"], upload)
        except ValueError as e:
            raise usage.UsageError(str(e))
        prange: Optional[Tuple[int, int]] = None
        if self["port-range"]:
            try:
                prange = _range(self["port-range"])
                if not 0 < prange[0] <= prange[1] <= 65535:
                    raise ValueError
            except ValueError:
                raise usage.UsageError("--port-range takes LOW:HIGH, e.g. 50000:50999")
        if self["rto-min"] <= 0:
            raise usage.UsageError("--rto-min must be positive")
        self["config"] = ServerConfig(
            limits=self["limits"], schedule=self["schedule"], adaptive=not self["no-adaptive"],
            rto_min=self["rto-min"], port_range=prange, single_port=self["single-port"])
        try:
            self["backend_obj"] = backends.from_spec(
                self["backend"], writable=self["writable"], overwrite=self["overwrite"])
        except ValueError as e:
            raise usage.UsageError(str(e))
        if not self["interfaces"]:
            self["interfaces"] = ["::"]


def makeService(options: Any) -> TFTPService:
    from twisted.internet import reactor  # the application's reactor, chosen by twistd

    if options["verbose"]:
        from txfbtftp.logs import set_level
        set_level("debug")
    return TFTPService(options["backend_obj"], reactor, options["port"], options["interfaces"],
                       options["config"])
