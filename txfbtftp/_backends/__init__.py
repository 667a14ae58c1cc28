"""The built-in backends, and the registry that builds one from ``scheme:argument``.

Other packages add schemes with :func:`register`; the daemon knows only the
registry.  A factory builds its backend and nothing else: no file, socket or
connection is opened before the service starts it (see
:class:`~txfbtftp.ILifecycle`), so ``twistd`` can drop privileges and chroot
first.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from txfbtftp._interfaces import IBackend, Unavailable

#: ``factory(argument, **settings) -> IBackend``; settings are server-wide
#: (``writable``, ``overwrite``, ``reactor``, ``http_timeout``, ``cache_dir``,
#: ``cache_size``, ``cache_revalidate``) and a factory takes those it needs.
Factory = Callable[..., IBackend]
#: ``check(argument)`` raises ValueError, with one clear sentence, for an
#: argument the factory would refuse, without building anything.
Check = Callable[[str], None]


@dataclass(frozen=True)
class _Scheme:
    factory: Factory
    check: Check | None


_registry: dict[str, _Scheme] = {}


def register(scheme: str, factory: Factory, check: Check | None = None) -> None:
    """Make ``--backend SCHEME:ARG`` build ``factory(ARG, **settings)``."""
    _registry[scheme] = _Scheme(factory, check)


def schemes() -> list[str]:
    return sorted(_registry)


def _lookup(spec: str) -> tuple[_Scheme, str]:
    scheme, sep, arg = spec.partition(":")
    if not sep or scheme not in _registry:
        raise ValueError("unknown backend %r; known schemes: %s" % (spec, ", ".join(schemes())))
    return _registry[scheme], arg


def check_spec(spec: str) -> None:
    """Raise ValueError if ``spec`` names no scheme or an argument its scheme refuses."""
    entry, arg = _lookup(spec)
    if entry.check is not None:
        entry.check(arg)


def from_spec(spec: str, check: bool = True, **settings: Any) -> IBackend:
    """Build the backend named by ``spec``, e.g. ``fs:/srv/tftp``; ``check``
    first (the daemon has checked already, where the files were then)."""
    entry, arg = _lookup(spec)
    if check and entry.check is not None:
        entry.check(arg)
    backend = entry.factory(arg, **settings)
    if not IBackend.providedBy(backend):
        raise ValueError("backend %r does not provide IBackend" % spec)
    return backend


def _directory(scheme: str, what: str) -> Check:
    """A check that the argument names an existing directory."""
    def check(arg: str) -> None:
        if not arg.strip():
            raise ValueError("%s: needs %s, e.g. %s:/srv/tftp" % (scheme, what, scheme))
        if not os.path.isdir(arg):
            raise Unavailable("%s:%s: not a directory" % (scheme, arg))
    return check


def _fs(arg: str, writable: bool = False, overwrite: bool = False, **_: Any) -> IBackend:
    from txfbtftp._backends.fs import FilesystemBackend
    return FilesystemBackend(arg, writable=writable, overwrite=overwrite)


def _python(arg: str, **settings: Any) -> IBackend:
    from txfbtftp._backends.python import from_spec as python_backend
    return python_backend(arg, **settings)


def _check_python(arg: str) -> None:
    from txfbtftp._backends.python import check
    check(arg)


def _template(arg: str, **_: Any) -> IBackend:
    from txfbtftp._backends.template import TemplateBackend
    return TemplateBackend(arg)


def _http(arg: str, reactor: Any = None, http_timeout: float = 3.0, cache_dir: str | None = None,
          cache_size: int = 1 << 30, cache_revalidate: float = 60.0, **_: Any) -> IBackend:
    """``http:BASE-URL``, behind a disk cache when ``cache_dir`` is given."""
    if reactor is None:
        raise ValueError("the http backend needs the reactor (settings: reactor=...)")
    from txfbtftp._backends.http.backend import HTTPBackend
    from txfbtftp._backends.http.origin import HTTPOrigin
    origin = HTTPOrigin(arg, reactor, timeout=http_timeout)
    if not cache_dir:
        return HTTPBackend(origin)
    from txfbtftp._backends.http.cache import CacheBackend
    return CacheBackend(origin, cache_dir, reactor, max_size=cache_size, revalidate=cache_revalidate)


def _check_http(arg: str) -> None:
    from txfbtftp._backends.http.origin import check_base
    check_base(arg)


register("fs", _fs, _directory("fs", "a directory"))
register("python", _python, _check_python)
register("template", _template, _directory("template", "a directory of templates"))
register("http", _http, _check_http)
