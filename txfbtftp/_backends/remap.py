"""Filename remapping with tftpd-hpa's rule files, as a wrapper around any backend.

Firmware asks for names the way it was built to (``\\Boot\\BCD``,
``/pxelinux.0``, ``PXELINUX.CFG/...``); rules rewrite them to what the
backend holds, so existing tftpd-hpa ``--map-file``s work unchanged.

The rules see the name as the client sent it, as in tftpd-hpa (``rg \\\\ /``
first folds Windows separators), and their result is cleaned like any
request's (``/`` separators, no leading ``/``, no ``..``; see
:attr:`TransferRequest.path`).  Each rule line is ``FLAGS REGEX [REPLACEMENT]``,
tried top to bottom; all rules run, not just the first that matches.
``#`` starts a comment; ``\\`` escapes whitespace or ``#``.  Flags:

``r``  replace the matched part with REPLACEMENT
``g``  with ``r``: repeat until the regex no longer matches
``i``  match case-insensitively
``e``  if this rule matched, stop here
``s``  if this rule matched, start again from the first rule
``a``  if this rule matched, refuse with ``ERROR 2`` (REPLACEMENT, if
       given, is the message the client sees)
``G``/``P``  only for reads / only for writes
``4``/``6``  only for IPv4 / only for IPv6 clients
``~``  apply when the regex does *not* match (not with ``r``)

In REPLACEMENT, ``\\0`` is the whole match, ``\\1``..``\\9`` the groups,
``\\i`` the client's IP address, ``\\x`` it in hex (``C00002A9``), ``\\U``
and ``\\L`` turn what follows to upper or lower case until ``\\E``, and
``\\`` before any other character is that character.  Regexes are Python's,
which read egrep's syntax the same way for the usual rules; POSIX classes
such as ``[[:alnum:]]`` are accepted.  A rule set that keeps rewriting
(e.g. ``rg a aa``) is stopped after :data:`MAX_STEPS` steps and the request
refused.

``txfbtftp remap-test RULES`` reads paths on stdin and prints each one
rewritten, or ``DENIED``, to try a rule file without a server.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import IO
from re import Pattern
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from zope.interface import implementer

from txfbtftp._interfaces import (IBackend, ICounting, ILifecycle, IReader, IReloadable, IWritableBackend, IWriter,
                                  MaybeDeferred, TransferRequest, Unavailable)
from txfbtftp._lifecycle import count_all, reload_all, start_all, stop_all
from txfbtftp._observe.logs import log
from txfbtftp._protocol import errors
from txfbtftp._protocol.paths import normalize

MAX_STEPS = 4096

_FLAGS = set("rgiesaGP46~")
_POSIX_CLASSES = {
    "[:alnum:]": "0-9A-Za-z", "[:alpha:]": "A-Za-z", "[:digit:]": "0-9", "[:xdigit:]": "0-9A-Fa-f",
    "[:lower:]": "a-z", "[:upper:]": "A-Z", "[:space:]": r" \t\n\r\f\v", "[:blank:]": r" \t",
    "[:punct:]": r"!-/:-@\[-`{-~"
}


@dataclass(frozen=True)
class Rule:
    """One line of a rule file."""

    flags: str
    regex: Pattern[str]
    replacement: str
    lineno: int

    def applies(self, write: bool, family: int | None) -> bool:
        if ("G" in self.flags and write) or ("P" in self.flags and not write):
            return False
        if ("4" in self.flags and family != 4) or ("6" in self.flags and family != 6):
            return False
        return True


def _tokens(line: str) -> list[str]:
    """Words split at unescaped whitespace, up to an unescaped ``#``; backslashes are kept."""
    words: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i >= n or line[i] == "#":
            return words
        start, escaped = i, False
        while i < n and (escaped or not (line[i].isspace() or line[i] == "#")):
            escaped = not escaped and line[i] == "\\"
            i += 1
        words.append(line[start:i])


def parse_rules(text: str, source: str = "rules") -> list[Rule]:
    """The rules in ``text``; ValueError names the file and line of the first mistake."""
    rules: list[Rule] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        words = _tokens(line)
        if not words:
            continue
        where = "%s, line %d" % (source, lineno)
        flags = words[0]
        bad = set(flags) - _FLAGS
        if bad:
            raise ValueError("%s: unknown flag %r in %r (known: %s)"
                             % (where, sorted(bad)[0], flags, "".join(sorted(_FLAGS))))
        if "~" in flags and "r" in flags:
            raise ValueError("%s: a rewrite (r) cannot be inverted (~)" % where)
        if len(words) < 2:
            raise ValueError("%s: no regex after %r" % (where, flags))
        if len(words) > 3:
            raise ValueError("%s: unexpected %r after the replacement (escape spaces with \\)"
                             % (where, words[3]))
        source_rx = words[1]
        for posix, python in _POSIX_CLASSES.items():
            source_rx = source_rx.replace(posix, python)
        try:
            regex = re.compile(source_rx, re.IGNORECASE if "i" in flags else 0)
        except re.error as e:
            raise ValueError("%s: bad regex %r: %s" % (where, words[1], e)) from None
        if "g" in flags and "r" not in flags:
            flags = flags.replace("g", "")
        rules.append(Rule(flags, regex, words[2] if len(words) > 2 else "", lineno))
    return rules


def load_rules(filename: str) -> list[Rule]:
    try:
        with open(filename, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise Unavailable("cannot read remap rules %s: %s" % (filename, e)) from None
    return parse_rules(text, filename)


def _expand(replacement: str, match: re.Match[str] | None, client: str) -> str:
    xform: Callable[[str], str] = str
    out: list[str] = []
    i, n = 0, len(replacement)
    while i < n:
        c = replacement[i]
        if c != "\\" or i + 1 == n:
            out.append(xform(c))
            i += 1
            continue
        e = replacement[i + 1]
        i += 2
        if e.isdigit():
            group = int(e)
            if match is not None and group <= match.re.groups:
                out.append(xform(match.group(group) or ""))
        elif e == "U":
            xform = str.upper
        elif e == "L":
            xform = str.lower
        elif e == "E":
            xform = str
        elif e == "i":
            out.append(xform(client))
        elif e == "x":
            out.append(xform(_hex(client)))
        else:
            out.append(xform(e))
    return "".join(out)


def _hex(host: str) -> str:
    try:
        return ipaddress.ip_address(host).packed.hex().upper()
    except ValueError:
        return ""


def _family(host: str) -> int | None:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def rewrite(path: str, rules: Sequence[Rule], client: str = "", write: bool = False) -> str:
    """``path`` after ``rules`` for a request from ``client``; AccessViolation if refused."""
    family = _family(client)
    current = path
    steps = 0
    index = 0
    while index < len(rules):
        rule = rules[index]
        index += 1
        if not rule.applies(write, family):
            continue
        matched = False
        while True:
            steps += 1
            if steps > MAX_STEPS:
                raise errors.AccessViolation()
            m = rule.regex.search(current)
            if (m is None) != ("~" in rule.flags):
                break
            matched = True
            if "a" in rule.flags:
                message = _expand(rule.replacement, m, client) if rule.replacement else ""
                raise errors.AccessViolation(message)
            if m is None or "r" not in rule.flags:
                break
            current = current[:m.start()] + _expand(rule.replacement, m, client) + current[m.end():]
            if "g" not in rule.flags:
                break
        if matched:
            if "e" in rule.flags:
                return current
            if "s" in rule.flags:
                index = 0
    return current


@implementer(IWritableBackend, ILifecycle, IReloadable, ICounting)
class RemapBackend:
    """``inner`` with every requested name passed through ``rules`` first.

    With ``source`` (the rule file), :meth:`reload` reads the rules again,
    and so does :meth:`start`: a process started later (a restarted worker)
    serves the file as it is now, not as it was when the server started.
    """

    def __init__(self, inner: IBackend, rules: Sequence[Rule], source: str | None = None) -> None:
        self.inner = inner
        self.rules = list(rules)
        self.source = source

    def count_with(self, increment: Callable[[str, int], None]) -> None:
        count_all([self.inner], increment)

    def reload(self) -> list[str]:
        done = []
        if self.source is not None:
            self.rules = load_rules(self.source)  # a bad file raises: the old rules stay
            done.append("remap rules from %s (%d rules)" % (self.source, len(self.rules)))
        return done + reload_all([self.inner])

    def start(self) -> None:
        if self.source is not None:
            try:
                self.rules = load_rules(self.source)
            except ValueError as e:
                log.warn("remap rules not re-read, the old ones stay: {err}", err=e)
        start_all([self.inner])

    def stop(self) -> Deferred[None]:
        return stop_all([self.inner])

    def map(self, path: str, request: TransferRequest) -> str:
        """The clean name the rules make of the client's own (or of ``path``,
        when a backend in front of this one chose another)."""
        raw = request.raw_path if request.raw_path and path == request.path else path
        new = normalize(rewrite(raw, self.rules, request.client[0], request.write))
        if new != path:
            log.debug("remapped {path!r} to {new!r}", path=path, new=new)
        return new

    def get_reader(self, path: str, request: TransferRequest) -> MaybeDeferred[IReader]:
        return self.inner.get_reader(self.map(path, request), request)

    def get_writer(self, path: str, request: TransferRequest) -> MaybeDeferred[IWriter]:
        inner = self.inner
        if not IWritableBackend.providedBy(inner):
            raise errors.AccessViolation("Uploads are disabled")
        return inner.get_writer(self.map(path, request), request)


def try_rules(rules: Sequence[Rule], lines: IO[str], out: IO[str], client: str = "127.0.0.1",
              write: bool = False) -> int:
    """Print each path read from ``lines`` rewritten, or ``DENIED``; the exit status."""
    for line in lines:
        path = line.rstrip("\r\n")
        try:
            result = normalize(rewrite(path, rules, client, write))
        except errors.TFTPError:
            result = "DENIED"
        out.write(result + "\n")
        out.flush()
    return 0
