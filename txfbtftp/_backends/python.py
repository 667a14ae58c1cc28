"""``python:module:name[:argument]``: a backend written in Python, named on
the command line, so a site's generator needs no plugin or package of its
own.

``module`` is a dotted name found on ``sys.path`` (``PYTHONPATH``), or the
path of a ``.py`` file, which is loaded as a module named after the file
(a name that must not be taken by another module).

``name`` is looked up in the module.  If it already provides
``IBackend`` it is the backend; otherwise it is called, with ``argument``
(when given) as the only positional argument and those server settings
(``writable``, ``overwrite``, ...) its signature accepts as keywords, and
must return something that provides ``IBackend``.  Everything after
``name``'s colon is the argument, colons included.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from types import ModuleType
from typing import Any

from txfbtftp._interfaces import IBackend


def parse(spec: str) -> tuple[str, str, str | None]:
    """``(module, name, argument or None)``; ValueError if ``spec`` is not of that shape."""
    module_name, sep, rest = spec.partition(":")
    attr, has_arg, arg = rest.partition(":")
    if not module_name or not sep or not attr:
        raise ValueError("python: takes MODULE:NAME[:ARGUMENT], e.g. python:mysite.tftp:backend, not %r"
                         % spec)
    return module_name, attr, arg if has_arg else None


#: The server-wide settings a factory may take (see txfbtftp._backends).
SETTINGS = ("writable", "overwrite", "reactor", "http_timeout", "cache_dir", "cache_size", "cache_revalidate")


def check(spec: str) -> None:
    """Everything :func:`from_spec` checks before it calls the factory."""
    _resolve(spec, dict.fromkeys(SETTINGS))


def from_spec(spec: str, **settings: Any) -> IBackend:
    """The backend named by ``module:name[:argument]``; ValueError says what is wrong."""
    target, args, kwargs = _resolve(spec, settings)
    if IBackend.providedBy(target):
        return target
    backend = target(*args, **kwargs)
    if not IBackend.providedBy(backend):
        module_name, attr, _ = parse(spec)
        raise ValueError("python:%s: %s.%s returned %r, which does not provide txfbtftp.IBackend"
                         % (spec, module_name, attr, backend))
    return backend


def _resolve(spec: str, settings: dict[str, Any]) -> tuple[Any, tuple[str, ...], dict[str, Any]]:
    """The backend itself, or a factory with its arguments."""
    module_name, attr, arg = parse(spec)
    try:
        module = _load(module_name)
    except Exception as e:
        hint = ""
        if isinstance(e, ModuleNotFoundError) and e.name == module_name.split(".")[0]:
            hint = " (put its directory on PYTHONPATH, or name the file: python:/path/to/%s.py:%s)" % (
                module_name.rpartition(".")[2], attr)
        raise ValueError("python:%s: cannot import %s: %s: %s%s"
                         % (spec, module_name, type(e).__name__, e, hint)) from e
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise ValueError("python:%s: module %s has no attribute %r" % (spec, module_name, attr)) from None
    if IBackend.providedBy(target):
        if arg is not None:
            raise ValueError("python:%s: %s is a backend already and takes no argument" % (spec, attr))
        return target, (), {}
    if not callable(target):
        raise ValueError("python:%s: %s.%s is neither a backend nor callable" % (spec, module_name, attr))
    args = (arg,) if arg is not None else ()
    kwargs = _accepted(target, settings)
    try:
        inspect.signature(target).bind(*args, **kwargs)
    except TypeError as e:
        raise ValueError("python:%s: cannot call %s.%s%s: %s"
                         % (spec, module_name, attr, " with an argument" if arg is not None else "", e)) from None
    except ValueError:
        pass  # no signature to check (a builtin); let the call decide
    return target, args, kwargs


def _load(module_name: str) -> ModuleType:
    if not module_name.endswith(".py"):
        return importlib.import_module(module_name)
    filename = os.path.abspath(module_name)
    name = os.path.splitext(os.path.basename(filename))[0]
    loaded = sys.modules.get(name)
    if loaded is not None:
        if getattr(loaded, "__file__", None) == filename:
            return loaded
        raise ImportError("a different module named %s is loaded already; rename the file" % name)
    loader_spec = importlib.util.spec_from_file_location(name, filename)
    if loader_spec is None or loader_spec.loader is None:
        raise ImportError("not a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        loader_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _accepted(target: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings ``target`` can take, so a factory names only those it uses."""
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return dict(settings)
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return dict(settings)
    names = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in settings.items() if k in names}
