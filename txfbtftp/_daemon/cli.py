"""The ``txfbtftp`` command (also ``python -m txfbtftp``).

``txfbtftp serve OPTIONS`` runs the server in the foreground and logs to
standard output: ``twistd -n tftp OPTIONS`` without twistd's own options.
``txfbtftp remap-test RULES`` tries a remap rule file without a server.
``txfbtftp get``, ``put`` and ``check`` are the client
(:mod:`txfbtftp._daemon.fetch`, :mod:`txfbtftp._daemon.check`); this is the
one place they meet the global reactor.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from txfbtftp._backends.remap import load_rules, try_rules
from txfbtftp._daemon import check, fetch
from txfbtftp._version import __version__


def _serve(argv: list[str]) -> int:
    from twisted.scripts.twistd import run
    sys.argv = ["txfbtftp serve", "--nodaemon", "--pidfile=", "--logfile=-", "tftp"] + argv
    run()
    return 0


def _remap_test(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="txfbtftp remap-test",
        description="Read paths on stdin, print each rewritten by RULES (or DENIED).")
    parser.add_argument("rules", metavar="RULES", help="a tftpd-hpa style remap file")
    parser.add_argument("--client", default="127.0.0.1", help="client address for \\i, \\x, 4 and 6")
    parser.add_argument("--write", action="store_true", help="as a write request (P rules, not G)")
    args = parser.parse_args(argv)
    try:
        rules = load_rules(args.rules)
    except ValueError as e:
        parser.exit(2, "%s: %s\n" % (parser.prog, e))
    return try_rules(rules, sys.stdin, sys.stdout, args.client, args.write)


def on_reactor(command: Callable[[Any], Coroutine[Any, Any, int]], internal: int = 1) -> int:
    """Run ``command(reactor)`` (a coroutine of the exit status) on the
    global reactor.  Ctrl-C cancels it, which tells the server; a crash is
    ``internal``, with its traceback on stderr."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    status: list[int] = []
    stopping: list[bool] = []

    def crashed(failure: Any) -> int:
        failure.printTraceback(file=sys.stderr)
        return internal

    def shutdown(d: Deferred[int]) -> None:
        stopping.append(True)
        d.cancel()

    def finish(_: object) -> None:
        if not stopping:
            reactor.stop()

    def start() -> None:
        d = Deferred.fromCoroutine(command(reactor))
        reactor.addSystemEventTrigger("before", "shutdown", shutdown, d)
        d.addErrback(crashed).addCallback(status.append)
        d.addBoth(finish)

    reactor.callWhenRunning(start)
    reactor.run()
    return status[0] if status else fetch.EXIT_INTERRUPTED


def _get(argv: list[str]) -> int:
    return on_reactor(fetch.get_command(argv))


def _put(argv: list[str]) -> int:
    return on_reactor(fetch.put_command(argv))


def _check(argv: list[str]) -> int:
    return on_reactor(check.check_command(argv), check.UNKNOWN)


COMMANDS = {
    "serve": (_serve, "run a server in the foreground (the options of 'twistd tftp'; serve --help)"),
    "remap-test": (_remap_test, "read paths on stdin, print each as a remap file rewrites it"),
    "get": (_get, "download a file: get tftp://host[:port]/path [-o FILE]"),
    "put": (_put, "upload a file: put FILE tftp://host[:port]/path"),
    "check": (_check, "check a server as a Nagios/Icinga plugin: check tftp://host/path"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: txfbtftp COMMAND [ARGS]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print("  %-12s %s" % (name, text))
        return 0 if args else 2
    if args[0] in ("-V", "--version"):
        print("txfbtftp %s" % __version__)
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print("txfbtftp: unknown command %r (try --help)" % args[0], file=sys.stderr)
        return 2
    return command[0](args[1:])
