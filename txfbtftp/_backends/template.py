"""``template:DIR``: per-client files rendered from templates.

DIR is laid out like the TFTP root it stands in for, so an operator moving
from tftpd-hpa or dnsmasq keeps the names the firmware asks for, and writes
the per-client part of a name as a placeholder instead of one file per
machine::

    pxelinux.cfg/01-{mac}     answers pxelinux.cfg/01-88-99-aa-bb-cc-dd
    grub.cfg-{ip}             answers grub.cfg-10.0.0.5
    pxelinux.cfg/{ip_hex}     answers pxelinux.cfg/0A000005
    boot.ipxe                 answers boot.ipxe, for every client

Placeholders are allowed in file names, not in directory names.  ``{mac}``
matches six hex octets separated by ``-``, ``:`` or nothing, ``{ip}`` a
dotted IPv4 address, ``{ip_hex}`` eight hex digits; any other ``{word}``
matches the rest of one path component.  A name without placeholders
matches only itself and beats every pattern; among patterns the one with
the most literal characters wins, then the one with fewer ``{word}``s
(so ``grub.cfg-{ip}`` beats ``grub.cfg-{name}``), then the alphabetically
first.  So ``pxelinux.cfg/01-88-99-aa-bb-cc-dd`` overrides
``pxelinux.cfg/01-{mac}`` for one machine.  Hidden files are never templates.

The content is a :class:`string.Template` filled with ``safe_substitute``:
``$name`` and ``${name}`` are replaced when the request defines them and
left alone otherwise, so iPXE's ``${net0/mac}`` or GRUB's ``$prefix`` pass
through; ``$$`` is a literal ``$``.  See :func:`variables` for the names.

An optional ``.clients`` file in DIR names the known clients, one per line:
a MAC or IP address then ``name=value`` words (shell quoting), e.g.
``88:99:aa:bb:cc:dd hostname=web01 role=web``.  When it exists, a client it
does not list (looked up by the MAC in the path, then the IP in the path,
then the client's address) gets ``FileNotFound``, so a chain falls through
to the next backend, and a listed client's words become variables.

Templates and ``.clients`` are read on each request, so edits take effect
at once.  Nothing matching raises ``FileNotFound``; uploads are refused with
``AccessViolation``.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shlex
import string
from typing import Any
from re import Pattern

from zope.interface import implementer

from txfbtftp._backends.memory import BytesReader
from txfbtftp._interfaces import IBackend, ILifecycle, IReloadable, TransferRequest, Unavailable
from txfbtftp._observe.logs import log
from txfbtftp._protocol import errors

CLIENTS_FILE = ".clients"

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SHAPES = {
    "mac": r"[0-9A-Fa-f]{2}(?:[-:]?[0-9A-Fa-f]{2}){5}",
    "ip": r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}",
    "ip_hex": r"[0-9A-Fa-f]{8}",
}
_ANY = r"[^/]+?"
_PXELINUX_MAC = re.compile(r"(?<![0-9A-Fa-f-])01-((?:[0-9A-Fa-f]{2}-){5}[0-9A-Fa-f]{2})(?![0-9A-Fa-f-])")

Variables = dict[str, str]


def mac_variables(text: str) -> Variables:
    """``mac`` (``88:99:aa:bb:cc:dd``), ``mac_dash`` and ``mac_hex`` from any common notation."""
    digits = re.sub(r"[-:.]", "", text).lower()
    if not re.fullmatch(r"[0-9a-f]{12}", digits):
        raise ValueError("not a MAC address: %r" % text)
    octets = [digits[i:i + 2] for i in range(0, 12, 2)]
    return {"mac": ":".join(octets), "mac_dash": "-".join(octets), "mac_hex": digits}


def ip_variables(prefix: str, text: str) -> Variables:
    """``PREFIX`` (natural form), ``PREFIX_hex`` (``0A000005``, as PXELINUX and tftpd-hpa's
    ``\\x`` write it) and ``PREFIX_dash`` (``10-0-0-5``, for host names)."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return {prefix: text}
    natural = str(addr)
    return {prefix: natural, prefix + "_hex": addr.packed.hex().upper(),
            prefix + "_dash": natural.replace(".", "-").replace(":", "-")}


def variables(path: str, request: TransferRequest, captured: Variables | None = None,
              known: Variables | None = None) -> Variables:
    """Everything a template may use, as a plain function of the request.

    ``path``, ``mode``; ``client_ip``, ``client_port``, ``client_ip_hex``,
    ``client_ip_dash``; ``server_ip``, ``server_port`` (the address the
    request arrived on); ``mac``, ``mac_dash``, ``mac_hex`` when the path
    carries a MAC (a ``{mac}`` placeholder, or PXELINUX's ``01-xx-xx-..``);
    ``ip``, ``ip_hex``, ``ip_dash`` from an ``{ip}`` or ``{ip_hex}``
    placeholder; any other placeholder's text; and ``known``, the client's
    words from ``.clients``.  The built-in names win over ``known``.
    """
    result: Variables = dict(known or {})
    result.update(captured or {})
    if "mac" not in result:
        m = _PXELINUX_MAC.search(path)
        if m:
            result.update(mac_variables(m.group(1)))
    client_host, client_port = request.client
    server_host, server_port = request.local
    result.update(ip_variables("client_ip", client_host))
    result.update(path=path, mode=request.mode, client_port=str(client_port),
                  server_ip=str(server_host), server_port=str(server_port))
    return result


def render(template: bytes, values: Variables) -> bytes:
    """``template`` with ``$name``s filled in; bytes that are not UTF-8 pass through unchanged."""
    text = template.decode("utf-8", "surrogateescape")
    return string.Template(text).safe_substitute(values).encode("utf-8", "surrogateescape")


class NamePattern:
    """A template's file name, compiled: which request names it answers, and what they carry."""

    __slots__ = ("name", "regex", "literal", "generic")

    def __init__(self, name: str) -> None:
        self.name = name
        parts: list[str] = []
        seen: set = set()
        pos = 0
        for m in _PLACEHOLDER.finditer(name):
            parts.append(re.escape(name[pos:m.start()]))
            var = m.group(1)
            parts.append("(?P=%s)" % var if var in seen else "(?P<%s>%s)" % (var, _SHAPES.get(var, _ANY)))
            seen.add(var)
            pos = m.end()
        parts.append(re.escape(name[pos:]))
        self.regex: Pattern[str] | None = re.compile("".join(parts), re.S) if seen else None
        self.literal = len(_PLACEHOLDER.sub("", name))
        self.generic = len(seen - set(_SHAPES))

    def match(self, requested: str) -> Variables | None:
        """The variables ``requested`` carries, or None if this name does not answer it."""
        if self.regex is None:
            return {} if requested == self.name else None
        m = self.regex.fullmatch(requested)
        if m is None:
            return None
        captured: Variables = {}
        for var, text in m.groupdict().items():
            if var == "mac":
                captured.update(mac_variables(text))
            elif var == "ip":
                if not _valid_ipv4(text):
                    return None
                captured.update(ip_variables("ip", text))
            elif var == "ip_hex":
                captured.update(ip_variables("ip", str(ipaddress.IPv4Address(bytes.fromhex(text)))))
            else:
                captured[var] = text
        return captured


def _valid_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _client_key(text: str) -> str:
    """A ``.clients`` key or a looked-up value in one spelling."""
    try:
        return mac_variables(text)["mac"]
    except ValueError:
        pass
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError("%r is neither a MAC nor an IP address" % text) from None


def parse_clients(text: str, source: str = CLIENTS_FILE) -> dict[str, Variables]:
    """``.clients`` as ``{normalised MAC or IP: variables}``; ValueError names the bad line."""
    table: dict[str, Variables] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
            if not words:
                continue
            key = _client_key(words[0])
            values: Variables = {}
            for word in words[1:]:
                name, sep, value = word.partition("=")
                if not sep or not name.isidentifier():
                    raise ValueError("expected name=value, got %r" % word)
                values[name] = value
        except ValueError as e:
            raise ValueError("%s, line %d: %s" % (source, lineno, e)) from None
        table[key] = values
    return table


@implementer(IBackend, ILifecycle, IReloadable)
class TemplateBackend:
    """Renders the best-matching template under ``root`` for each request.

    :meth:`start` checks the root and reads ``.clients``; templates and
    ``.clients`` are read again whenever they change (a ``.clients`` that no
    longer parses leaves the last good one in use, with a warning), and
    :meth:`reload` reads ``.clients`` at once.
    """

    def __init__(self, root: str) -> None:
        self._configured = root
        self.root = os.path.realpath(root)
        self._patterns: dict[str, NamePattern] = {}
        self._clients: tuple[Any, dict[str, Variables] | None] = (None, None)
        self._bad: Any = None  # the stamp of a .clients that did not parse

    def start(self) -> None:
        root = os.path.realpath(self._configured)
        if not os.path.isdir(root) or not os.access(root, os.R_OK | os.X_OK):
            raise Unavailable("%s is not a readable directory" % self._configured)
        self.root = root
        self.reload()

    def stop(self) -> None:
        pass

    def reload(self) -> list[str]:
        path = os.path.join(self.root, CLIENTS_FILE)
        table = self._read_clients(path)
        if table is None:
            self._clients = (None, None)
            return ["templates in %s: no %s" % (self.root, CLIENTS_FILE)]
        self._clients = table
        assert table[1] is not None
        return ["templates in %s: %s (%d machines)" % (self.root, CLIENTS_FILE, len(table[1]))]

    def _read_clients(self, path: str) -> tuple[Any, dict[str, Variables]] | None:
        """``(stamp, table)`` of the file, None if there is none; ValueError if it does not parse."""
        try:
            st = os.stat(path)
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise Unavailable("cannot read %s: %s" % (path, e.strerror)) from None
        return (st.st_ino, st.st_mtime_ns, st.st_size), parse_clients(text, path)

    def clients(self) -> dict[str, Variables] | None:
        """The ``.clients`` table, re-read when the file changes; None without one."""
        path = os.path.join(self.root, CLIENTS_FILE)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._clients = (None, None)
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._clients[0] != stamp:
            try:
                table = self._read_clients(path)
            except ValueError as e:
                if self._bad != stamp:
                    self._bad = stamp
                    log.warn("{err}; {what}", err=e, what="still using the previous one" if self._clients[1]
                             is not None else "no machine is known until it is fixed")
                return self._clients[1] if self._clients[1] is not None else {}
            self._clients = table if table is not None else (None, None)
        return self._clients[1]

    def find(self, path: str) -> tuple[str, Variables]:
        """The template file answering ``path`` and what the path carries; FileNotFound if none."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if not parts or ".." in parts or any("\x00" in p for p in parts):
            raise errors.FileNotFound()
        directory = os.path.realpath(os.path.join(self.root, *parts[:-1]))
        if directory != self.root and not directory.startswith(self.root + os.sep):
            raise errors.FileNotFound()
        try:
            names = os.listdir(directory)
        except OSError:
            raise errors.FileNotFound() from None
        requested = parts[-1]
        found = []
        for name in names:
            if name.startswith("."):
                continue
            pattern = self._patterns.get(name)
            if pattern is None:
                pattern = self._patterns[name] = NamePattern(name)
            captured = pattern.match(requested)
            if captured is not None:
                found.append((pattern.regex is not None, -pattern.literal, pattern.generic, name, captured))
        for *_, name, captured in sorted(found, key=lambda f: f[:4]):
            full = os.path.join(directory, name)
            if os.path.isfile(full):
                return full, captured
        raise errors.FileNotFound()

    def get_reader(self, path: str, request: TransferRequest) -> BytesReader:
        full, captured = self.find(path)
        known = None
        table = self.clients()
        if table is not None:
            known = _lookup(table, path, captured, request)
            if known is None:
                raise errors.FileNotFound()
        values = variables(path, request, captured, known)
        try:
            with open(full, "rb") as f:
                template = f.read()
        except OSError:
            raise errors.FileNotFound() from None
        return BytesReader(render(template, values))


def _lookup(table: dict[str, Variables], path: str, captured: Variables,
            request: TransferRequest) -> Variables | None:
    probe = variables(path, request, captured)
    for key in (probe.get("mac"), probe.get("ip"), probe.get("client_ip")):
        if key is not None and key in table:
            return table[key]
    return None
