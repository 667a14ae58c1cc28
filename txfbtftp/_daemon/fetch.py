"""``txfbtftp get`` and ``txfbtftp put``: the client on the command line.

Exit codes are curl's for TFTP where curl has one (:data:`EXIT_CODES`), so
scripts written for ``curl tftp://...`` read them the same way.  A download
to a file goes to a temporary file beside it, renamed into place only when
complete: a failed transfer leaves nothing behind.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import stat
import sys
import tempfile
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import IO, Any

from twisted.internet.defer import CancelledError
from twisted.internet.error import DNSLookupError

from txfbtftp._protocol import errors
from txfbtftp._protocol.client import request_options
from txfbtftp._protocol.schedule import Schedule
from txfbtftp._types import IClientReactor
from txfbtftp.client import DEFAULT_CLIENT_SCHEDULE, TFTPURL, ClientResult, Progress, get, put

#: The exit code for each ERROR code, as curl's (68-74; 42 for the rest).
EXIT_CODES = {0: 71, 1: 68, 2: 69, 3: 70, 4: 71, 5: 72, 6: 73, 7: 74}
EXIT_OTHER_ERROR = 42      # curl: ERROR 8 and codes outside RFC 1350
EXIT_TIMEOUT = 28          # curl: operation timed out
EXIT_BAD_URL = 3           # curl: URL malformed
EXIT_RESOLVE = 6           # curl: could not resolve host
EXIT_WRITE = 23            # curl: could not write the local file
EXIT_READ = 26             # curl: could not read the local file
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: Files at least this large (or of unknown size) get a progress bar on a terminal.
PROGRESS_FROM = 1 << 20


class LocalError(Exception):
    """A local file could not be read (``read``) or written."""

    def __init__(self, message: str, read: bool) -> None:
        super().__init__(message)
        self.read = read


def exit_code(exc: BaseException) -> int:
    """The command's exit status for what ended a transfer."""
    if isinstance(exc, errors.TFTPTimeout):
        return EXIT_TIMEOUT
    if isinstance(exc, errors.TFTPError):
        return EXIT_CODES.get(exc.code, EXIT_OTHER_ERROR)
    if isinstance(exc, DNSLookupError):
        return EXIT_RESOLVE
    if isinstance(exc, CancelledError):
        return EXIT_INTERRUPTED
    if isinstance(exc, LocalError):
        return EXIT_READ if exc.read else EXIT_WRITE
    if isinstance(exc, OSError):
        return EXIT_WRITE
    return 1


def describe(exc: BaseException) -> str:
    if isinstance(exc, errors.TFTPTimeout):
        return "timed out: %s" % exc.message
    if isinstance(exc, errors.TFTPError):
        return "%s (ERROR %d)" % (exc.message, exc.code)
    if isinstance(exc, DNSLookupError):
        return "could not resolve %s" % exc
    return str(exc) or type(exc).__name__


def transfer_options(parser: argparse.ArgumentParser) -> None:
    """The options every client command takes."""
    g = parser.add_argument_group("transfer options")
    g.add_argument("-b", "--blksize", type=int, metavar="N",
                   help="block size to ask for (8..65464; default: what fits a 1500-byte MTU; 512 asks nothing)")
    g.add_argument("-w", "--windowsize", type=int, default=1, metavar="N",
                   help="blocks per window, RFC 7440 (default 1: lock-step)")
    g.add_argument("--no-tsize", dest="tsize", action="store_false", help="do not ask for or announce the size")
    g.add_argument("--timeout", type=int, metavar="S", help="ask the server to retransmit after S seconds (1..255)")
    g.add_argument("--utimeout", type=int, metavar="US", help="the same in microseconds (10000..255000000)")
    g.add_argument("--schedule", type=Schedule.parse, default=DEFAULT_CLIENT_SCHEDULE, metavar="WAITS",
                   help="this side's watchdog: waits before each retransmission, e.g. 1,2,4 or 1x5 "
                        "(default 1,2,4,8,16); its sum is the patience for a silent server")
    g.add_argument("--mode", choices=("octet", "netascii"), help="transfer mode (default octet, or the URL's ;mode=)")
    g.add_argument("-a", "--netascii", dest="mode", action="store_const", const="netascii", help="--mode netascii")
    g.add_argument("--bind", metavar="ADDRESS", help="local address to send from")


def client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(blksize=args.blksize, windowsize=args.windowsize, tsize=args.tsize, timeout=args.timeout,
                utimeout=args.utimeout, schedule=args.schedule, mode=args.mode, bind=args.bind)


def output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no messages but errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="a summary of the transfer on stderr")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="a progress bar on stderr (default: when stderr is a terminal)")


class ProgressBar:
    """A tqdm bar on stderr, drawn for large files once their size is known."""

    def __init__(self, name: str, enabled: bool | None) -> None:
        self.name = name
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.bar: Any = None
        self._decided = False

    @property
    def callback(self) -> Progress | None:
        """What the transfer calls per block: nothing at all when there is no bar."""
        return self if self.enabled else None

    def __call__(self, done: int, total: int | None) -> None:
        if not self._decided:
            self._decided = True
            if self.enabled and (total is None or total >= PROGRESS_FROM):
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=self.name, unit="B", unit_scale=True, unit_divisor=1024,
                                file=sys.stderr, leave=True, dynamic_ncols=True)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def summary(result: ClientResult) -> str:
    r = result.record
    first = "-" if r.time_to_first_packet is None else "%.1f ms" % (r.time_to_first_packet * 1000)
    options = " ".join("%s=%s" % kv for kv in r.options_acknowledged.items()) or "none (RFC 1350)"
    return ("%d bytes in %.3f s (%.1f MB/s), first packet %s, %d retransmits, options %s"
            % (r.bytes_transferred, r.duration, result.throughput / 1e6, first, r.retransmits, options))


def parse_url(parser: argparse.ArgumentParser, url: str) -> TFTPURL:
    try:
        return TFTPURL.parse(url)
    except ValueError as e:
        parser.exit(EXIT_BAD_URL, "%s: %s\n" % (parser.prog, e))
        raise  # not reached


Command = Callable[[IClientReactor], Coroutine[Any, Any, int]]


def get_command(argv: list[str]) -> Command:
    parser = argparse.ArgumentParser(prog="txfbtftp get", description="Download a file from a TFTP server.")
    parser.add_argument("url", metavar="URL", help="tftp://host[:port]/path (IPv6 in brackets; ;mode=netascii)")
    parser.add_argument("-o", "--output", metavar="FILE", default="-", help="where to write it (default: stdout)")
    transfer_options(parser)
    output_options(parser)
    args = parser.parse_args(argv)
    url = parse_url(parser, args.url)
    progress = ProgressBar(os.path.basename(url.path), False if args.quiet else args.progress)

    async def run(reactor: IClientReactor) -> int:
        part = direct = None
        try:
            if args.output == "-":
                out: IO[bytes] = sys.stdout.buffer
            else:
                # A file is written beside its target and renamed over it when
                # complete (through a symlink: the file it names); a device or
                # a FIFO (/dev/null, a pipe's name) is written as it is.
                try:
                    st: os.stat_result | None = os.stat(args.output)
                except FileNotFoundError:
                    st = None
                except OSError as e:
                    raise LocalError("%s: %s" % (args.output, e.strerror), False) from None
                target = os.path.realpath(args.output)
                try:
                    if st is not None and not stat.S_ISREG(st.st_mode):
                        out = direct = open(args.output, "wb")
                    else:
                        fd, part = tempfile.mkstemp(prefix=".%s." % os.path.basename(target), suffix=".part",
                                                    dir=os.path.dirname(target))
                        out = os.fdopen(fd, "wb")
                except OSError as e:
                    raise LocalError("%s: %s" % (args.output, e.strerror), False) from None
            result = await get(reactor, str(url), to=out, progress=progress.callback, **client_kwargs(args))
            out.flush()
            if part is not None:
                out.close()
                os.chmod(part, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
                os.replace(part, target)
                part = None
        except Exception as e:
            return _failed(parser.prog, e, progress)
        finally:
            if part is not None:
                out.close()
                os.unlink(part)
            if direct is not None:
                with contextlib.suppress(OSError):
                    direct.close()
        return _done(parser.prog, args, result, progress)

    return _checked(parser, run, args)


def put_command(argv: list[str]) -> Command:
    parser = argparse.ArgumentParser(prog="txfbtftp put", description="Upload a file to a TFTP server.")
    parser.add_argument("file", metavar="FILE", help="the file to send ('-': standard input)")
    parser.add_argument("url", metavar="URL", help="tftp://host[:port]/path; a path ending in / takes FILE's name")
    transfer_options(parser)
    output_options(parser)
    args = parser.parse_args(argv)
    name = "stdin" if args.file == "-" else os.path.basename(args.file)
    base, sep, mode = args.url.partition(";mode=")
    if base.endswith("/"):
        args.url = base + urllib.parse.quote(name) + sep + mode
    url = parse_url(parser, args.url)
    progress = ProgressBar(name, False if args.quiet else args.progress)

    async def run(reactor: IClientReactor) -> int:
        try:
            if args.file == "-":
                source: IO[bytes] = sys.stdin.buffer
            else:
                try:
                    source = open(args.file, "rb")
                except OSError as e:
                    raise LocalError("%s: %s" % (args.file, e.strerror), True) from None
            with source:
                result = await put(reactor, str(url), source=source, progress=progress.callback,
                                   **client_kwargs(args))
        except OSError as e:  # reading the file failed on the way
            return _failed(parser.prog, LocalError("%s: %s" % (args.file, e.strerror or e), True), progress)
        except Exception as e:
            return _failed(parser.prog, e, progress)
        return _done(parser.prog, args, result, progress)

    return _checked(parser, run, args)


def _done(prog: str, args: argparse.Namespace, result: ClientResult, progress: ProgressBar) -> int:
    progress.close()
    if args.verbose:
        print("%s: %s" % (prog, summary(result)), file=sys.stderr)
    return 0


def _checked(parser: argparse.ArgumentParser, run: Command, args: argparse.Namespace) -> Command:
    """Option values the client refuses are usage errors, found before the reactor runs."""
    try:
        request_options(args.blksize, args.windowsize, None, args.timeout, args.utimeout)
    except ValueError as e:
        parser.exit(EXIT_USAGE, "%s: %s\n" % (parser.prog, e))
    return run


def _failed(prog: str, exc: BaseException, progress: ProgressBar) -> int:
    progress.close()
    if not isinstance(exc, CancelledError):
        print("%s: %s" % (prog, describe(exc)), file=sys.stderr)
    return exit_code(exc)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
