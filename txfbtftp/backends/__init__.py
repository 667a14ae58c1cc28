"""Backends, and the registry that builds one from ``scheme:argument``.

Other packages add schemes with :func:`register`; the twistd plugin and
:func:`from_spec` only know the registry.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from txfbtftp.interfaces import IBackend

#: ``factory(argument, **settings) -> IBackend``; settings are server-wide
#: (e.g. ``writable``, ``overwrite``, ``reactor``) and may be ignored.
Factory = Callable[..., Any]
_registry: Dict[str, Factory] = {}


def register(scheme: str, factory: Factory) -> None:
    _registry[scheme] = factory


def schemes() -> list:
    return sorted(_registry)


def from_spec(spec: str, **settings: Any) -> Any:
    """Build the backend named by ``spec``, e.g. ``fs:/srv/tftp``."""
    scheme, sep, arg = spec.partition(":")
    if not sep or scheme not in _registry:
        raise ValueError("unknown backend %r; known schemes: %s" % (spec, ", ".join(schemes())))
    backend = _registry[scheme](arg, **settings)
    if not IBackend.providedBy(backend):
        raise ValueError("backend %r does not provide IBackend" % spec)
    return backend


def _fs(arg: str, writable: bool = False, overwrite: bool = False, **_: Any) -> Any:
    from txfbtftp.backends.fs import FilesystemBackend
    return FilesystemBackend(arg, writable=writable, overwrite=overwrite)


register("fs", _fs)


def _python(arg: str, **settings: Any) -> Any:
    from txfbtftp.backends.python import from_spec as python_backend
    return python_backend(arg, **settings)


register("python", _python)


def _template(arg: str, **_: Any) -> Any:
    from txfbtftp.backends.template import TemplateBackend
    return TemplateBackend(arg)


register("template", _template)


def _http(arg: str, reactor: Any = None, http_timeout: float = 3.0, cache_dir: Optional[str] = None,
          cache_size: int = 1 << 30, cache_revalidate: float = 60.0, **_: Any) -> Any:
    """``http:BASE-URL``, behind a disk cache when ``cache_dir`` is given."""
    if reactor is None:
        raise ValueError("the http backend needs the reactor (settings: reactor=...)")
    from txfbtftp.backends.http import HTTPBackend, HTTPOrigin
    origin = HTTPOrigin(arg, reactor, timeout=http_timeout)
    if not cache_dir:
        return HTTPBackend(origin)
    from txfbtftp.cache import CacheBackend
    try:
        return CacheBackend(origin, cache_dir, reactor, max_size=cache_size, revalidate=cache_revalidate)
    except OSError as e:
        raise ValueError("cannot use the cache directory %s: %s" % (cache_dir, e.strerror))


register("http", _http)
