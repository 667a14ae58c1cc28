"""The ``txfbtftp`` command (also ``python -m txfbtftp``).

``txfbtftp serve OPTIONS`` runs the server in the foreground and logs to
standard output: ``twistd -n tftp OPTIONS`` without twistd's own options.
``txfbtftp remap-test RULES`` tries a remap rule file without a server.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from txfbtftp._backends.remap import load_rules, try_rules
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


COMMANDS = {
    "serve": (_serve, "run a server in the foreground (the options of 'twistd tftp'; serve --help)"),
    "remap-test": (_remap_test, "read paths on stdin, print each as a remap file rewrites it"),
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
