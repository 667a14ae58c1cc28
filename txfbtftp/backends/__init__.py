"""Backends, and the registry that builds one from ``scheme:argument``.

Other packages add schemes with :func:`register`; the twistd plugin and
:func:`from_spec` only know the registry.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

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
