"""``txfbtftp check URL``: a monitoring plugin, as Nagios and Icinga run them.

It downloads the file (into a digest, never into memory), optionally checks
its size and SHA-256, and prints one line: the state, the latency (the
time to the server's first packet), the throughput, the retransmissions and
the negotiated options, then Nagios performance data after ``|``.  The
exit status is the plugin convention: 0 OK, 1 WARNING (slower than
``--warn``), 2 CRITICAL (slower than ``--crit``, any TFTP error, a timeout,
a size or digest mismatch), 3 UNKNOWN (bad arguments, an internal error).
``--json`` prints one JSON object instead.
"""
from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import sys
from typing import Any, NoReturn

from twisted.internet.defer import CancelledError
from twisted.internet.error import DNSLookupError
from zope.interface import implementer

from txfbtftp._interfaces import IWriter
from txfbtftp._protocol import errors
from txfbtftp._protocol.client import request_options
from txfbtftp._types import IClientReactor
from txfbtftp._daemon.fetch import client_kwargs, describe, transfer_options
from txfbtftp.client import TFTPURL, ClientResult, get

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATES = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


@implementer(IWriter)
class Digest:
    """Counts and hashes a download instead of keeping it."""

    def __init__(self) -> None:
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.size += len(data)
        self.sha256.update(data)

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _Parser(argparse.ArgumentParser):
    """Bad arguments are UNKNOWN (3), not argparse's 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print("TFTP UNKNOWN - %s" % message)  # a plugin's verdict goes to stdout
        sys.exit(UNKNOWN)


def _sha256(text: str) -> str:
    text = text.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise argparse.ArgumentTypeError("expected 64 hex digits")
    return text


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def check_command(argv: list[str]) -> Any:
    parser = _Parser(prog="txfbtftp check", description=__doc__.split("\n\n")[0],
                     epilog="Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.")
    parser.add_argument("url", metavar="URL", help="tftp://host[:port]/path")
    parser.add_argument("--size", type=int, metavar="N", help="the file must have N bytes")
    parser.add_argument("--sha256", type=_sha256, metavar="HEX", help="the file's SHA-256 must be HEX")
    parser.add_argument("--warn", type=_seconds, metavar="S", help="WARNING when the transfer takes over S seconds")
    parser.add_argument("--crit", type=_seconds, metavar="S", help="CRITICAL when it takes over S seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the plugin line")
    transfer_options(parser)
    args = parser.parse_args(argv)
    try:
        url = TFTPURL.parse(args.url)
        kwargs = client_kwargs(args)
        request_options(args.blksize, args.windowsize, None, args.timeout, args.utimeout)
    except ValueError as e:
        parser.error(str(e))

    async def run(reactor: IClientReactor) -> int:
        digest = Digest()
        try:
            result = await get(reactor, str(url), to=digest, **kwargs)
        except Exception as e:
            return _failed(args, url, e)
        return _judge(args, url, result, digest)

    return run


def _judge(args: argparse.Namespace, url: TFTPURL, result: ClientResult, digest: Digest) -> int:
    r = result.record
    state, problem = OK, ""
    if args.size is not None and digest.size != args.size:
        state, problem = CRITICAL, "size %d, expected %d" % (digest.size, args.size)
    elif args.sha256 is not None and digest.sha256.hexdigest() != args.sha256:
        state, problem = CRITICAL, "SHA-256 %s, expected %s" % (digest.sha256.hexdigest(), args.sha256)
    elif args.crit is not None and r.duration > args.crit:
        state, problem = CRITICAL, "%.3f s > %g s" % (r.duration, args.crit)
    elif args.warn is not None and r.duration > args.warn:
        state, problem = WARNING, "%.3f s > %g s" % (r.duration, args.warn)
    first = r.time_to_first_packet or 0.0
    options = " ".join("%s=%s" % kv for kv in r.options_acknowledged.items()) or "no options"
    text = ("%s: %d bytes in %.3f s, %.2f MB/s, first packet %.1f ms, %d retransmits, %s"
            % (url.path, digest.size, r.duration, result.throughput / 1e6, first * 1000, r.retransmits, options))
    if problem:
        text = "%s - %s" % (problem, text)
    perf = [_perf("time", "%.6fs" % r.duration, args.warn, args.crit), _perf("latency", "%.6fs" % first),
            _perf("size", "%dB" % digest.size), _perf("throughput", "%.0f" % result.throughput),
            _perf("retransmits", "%d" % r.retransmits)]
    if args.json:
        _print_json(state, text, url, r.as_dict(), dict(
            sha256=digest.sha256.hexdigest(), size=digest.size, latency=first, duration=r.duration,
            throughput=result.throughput, retransmits=r.retransmits, options=r.options_acknowledged))
    else:
        print("TFTP %s - %s | %s" % (STATES[state], text, " ".join(perf)))
    return state


def _failed(args: argparse.Namespace, url: TFTPURL, exc: BaseException) -> int:
    # What the server did (or did not) is CRITICAL; what failed here (a
    # source address this host does not have, a bug) is UNKNOWN.
    state = CRITICAL if _the_servers(exc) else UNKNOWN
    reason = "interrupted" if isinstance(exc, CancelledError) else describe(exc)
    text = "%s: %s" % (url.path, _one_line(reason))
    if args.json:
        _print_json(state, text, url, None, dict(error=type(exc).__name__, code=getattr(exc, "code", None)))
    else:
        print("TFTP %s - %s" % (STATES[state], text))
    return state


def _the_servers(exc: BaseException) -> bool:
    """Whether ``exc`` says the server (or the way to it) failed."""
    if isinstance(exc, (errors.TFTPError, DNSLookupError, ConnectionRefusedError)):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN)


def _one_line(text: str) -> str:
    """A server's words on the plugin's one line: no line breaks, and no
    ``|``, which would start the performance data."""
    return " ".join(text.replace("|", "/").split())


def _perf(label: str, value: str, warn: float | None = None, crit: float | None = None) -> str:
    """One Nagios performance datum: ``label=value[;warn;crit;min]``."""
    if warn is None and crit is None:
        return "%s=%s;;;0" % (label, value)
    return "%s=%s;%s;%s;0" % (label, value, "" if warn is None else "%g" % warn, "" if crit is None else "%g" % crit)


def _print_json(state: int, text: str, url: TFTPURL, record: dict[str, Any] | None, extra: dict[str, Any]) -> None:
    out = dict(state=STATES[state], exit=state, summary=text, url=str(url), **extra, record=record)
    sys.stdout.write(json.dumps(out, sort_keys=True) + os.linesep)
