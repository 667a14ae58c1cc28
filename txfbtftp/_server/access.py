"""Who may ask: ``--allow``, ``--deny`` and ``--allow-write``, by network.

The most specific rule wins (the longest prefix that contains the client's
address), ``deny`` over ``allow`` at equal length; an address no rule
matches is allowed when there are only ``deny`` rules, and denied as soon as
there is an ``allow`` rule.  Uploads must also match an ``allow-write``
rule when there is any.  A rule file holds the same rules, one per line
(``allow 10.0.0.0/8``, ``deny 10.9.0.0/16``, ``allow-write 10.1.2.3``, ``#``
comments), read when the service starts (after ``twistd`` chroots: name it
as it is seen from there) and again on SIGHUP.  IPv4 clients of a
dual-stack socket are matched in their natural form.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field


from zope.interface import implementer

from txfbtftp._interfaces import ILifecycle, IReloadable, Unavailable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
KINDS = ("allow", "deny", "allow-write")


def network(text: str) -> Network:
    """``10.0.0.0/8``, ``10.1.2.3``, ``2001:db8::/32``: ValueError if it is none."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError("%r is not an address or a network (CIDR)" % text) from None


@dataclass
class Rules:
    allow: list[Network] = field(default_factory=list)
    deny: list[Network] = field(default_factory=list)
    allow_write: list[Network] = field(default_factory=list)


def parse(text: str, source: str = "access rules") -> Rules:
    """The rules of a file; ValueError names the line of the first mistake."""
    rules = Rules()
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2 or words[0] not in KINDS:
            raise ValueError("%s, line %d: expected allow, deny or allow-write and a network" % (source, lineno))
        try:
            getattr(rules, words[0].replace("-", "_")).append(network(words[1]))
        except ValueError as e:
            raise ValueError("%s, line %d: %s" % (source, lineno, e)) from None
    return rules


def read(source: str) -> Rules:
    """The rules in the file ``source``: Unavailable if unreadable, ValueError if wrong."""
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise Unavailable("cannot read access rules %s: %s" % (source, getattr(e, "strerror", None) or e)) from None
    return parse(text, source)


def _best(nets: Iterable[Network], address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    """The longest prefix among ``nets`` containing ``address``; -1 for none."""
    return max((n.prefixlen for n in nets if n.version == address.version and address in n), default=-1)


@implementer(ILifecycle, IReloadable)
class AccessRules:
    """The rules given (``allow``, ``deny``, ``allow_write``: networks as
    text), plus those of ``source`` (a rule file: read by :meth:`start`, again
    by :meth:`reload`)."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = (), allow_write: Iterable[str] = (),
                 source: str | None = None) -> None:
        self._given = Rules([network(a) for a in allow], [network(d) for d in deny],
                            [network(w) for w in allow_write])
        self.source = source
        self._use(Rules())

    def _use(self, loaded: Rules) -> None:
        g = self._given
        self._rules = Rules(g.allow + loaded.allow, g.deny + loaded.deny, g.allow_write + loaded.allow_write)
        self.count = len(loaded.allow) + len(loaded.deny) + len(loaded.allow_write)

    def start(self) -> None:
        self.reload()

    def stop(self) -> None:
        pass

    def reload(self) -> list[str]:
        if self.source is None:
            return []
        self._use(read(self.source))  # a bad file raises: the old rules stay
        return ["access rules from %s (%d rules)" % (self.source, self.count)]

    @property
    def empty(self) -> bool:
        r = self._rules
        return not (r.allow or r.deny or r.allow_write)

    def permits(self, host: str, write: bool = False) -> bool:
        """May ``host`` (an address in natural form) read, or with ``write`` upload?"""
        r = self._rules
        if not (r.allow or r.deny or r.allow_write):
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        allow = _best(r.allow, address)
        deny = _best(r.deny, address)
        if deny >= 0 and deny >= allow:
            return False
        if allow < 0 and r.allow:
            return False
        if write and r.allow_write:
            return _best(r.allow_write, address) >= 0
        return True
