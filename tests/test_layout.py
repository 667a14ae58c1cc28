"""The shape of the package, checked from its source: the layers' rules hold.

- ``txfbtftp._protocol`` is sans I/O: it imports the standard library's pure
  modules and itself, never Twisted, sockets, files or clocks.
- Layers import downwards only, and no module imports itself back through
  others (no cycle), imports for type checking aside.
- No class is longer than a reader holds in their head.
- The public surface is ``txfbtftp`` itself and the modules meant for users;
  everything else is private.
"""
import ast
import importlib
import pathlib

import pytest

import txfbtftp

PACKAGE = pathlib.Path(txfbtftp.__file__).parent
PUBLIC = {"txfbtftp", "txfbtftp.testing", "txfbtftp.client", "txfbtftp.__main__"}
#: What the sans-I/O layer may import: pure standard library.
PURE = {"__future__", "dataclasses", "enum", "functools", "struct", "typing", "collections", "abc"}
#: Each layer and the layers (besides itself) it may import from.
LAYERS = {
    "_protocol": set(),
    "_interfaces": {"_protocol"},
    "_types": set(),
    "_version": set(),
    "_wait": set(),
    "_buckets": set(),
    "_lifecycle": {"_interfaces"},
    "_netascii": {"_protocol", "_interfaces"},
    "_observe": {"_protocol", "_net.address", "_interfaces", "_buckets"},
    "_net": {"_protocol", "_observe.logs"},
    "_backends": {"_protocol", "_interfaces", "_lifecycle", "_observe", "_types"},
    "_server": {"_protocol", "_interfaces", "_lifecycle", "_netascii", "_observe", "_net", "_types", "_wait",
                "_buckets"},
    "_daemon": {"_protocol", "_interfaces", "_lifecycle", "_observe", "_net", "_server", "_backends", "_types",
                "_version", "client"},
    "testing": {"_protocol", "_interfaces", "_observe", "_server", "_types"},
    # The client: the machines, the seams, records, batched sends; never the server.
    "client": {"_protocol", "_interfaces", "_netascii", "_observe", "_net", "_types", "_wait"},
}
MAX_CLASS_LINES = 250


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports(path, type_checking=False):
    """Modules ``path`` imports at run time (and, if asked, for type checking only)."""
    tree = ast.parse(path.read_text())
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in hidden and not type_checking:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update("%s.%s" % (node.module, alias.name) for alias in node.names)
    return found


def internal(names):
    """The txfbtftp modules among ``names`` (a name may be a module's attribute)."""
    known = {name for name, _ in modules()}
    return {n for n in names if n in known}


def test_the_protocol_layer_imports_nothing_but_pure_stdlib_and_itself():
    offenders = {}
    for name, path in modules():
        if name.startswith("txfbtftp._protocol"):
            bad = {m for m in imports(path, type_checking=True)
                   if m.split(".")[0] not in PURE and not m.startswith("txfbtftp._protocol")}
            if bad:
                offenders[name] = sorted(bad)
    assert offenders == {}


def test_layers_import_downwards_only():
    offenders = {}
    for name, path in modules():
        if name in ("txfbtftp", "txfbtftp.__main__"):
            continue
        layer = name.split(".")[1]
        allowed = LAYERS[layer]
        for dep in internal(imports(path)):
            dep_rel = dep.split(".", 1)[1] if "." in dep else ""
            if dep_rel.split(".")[0] == layer:
                continue
            if not any(dep_rel == a or dep_rel.startswith(a + ".") for a in allowed):
                offenders.setdefault(name, []).append(dep)
    assert offenders == {}


def test_no_import_cycles():
    graph = {name: internal(imports(path)) - {name} for name, path in modules()}
    # A package imports its submodules' names: an edge to the package is an edge to its __init__ only.
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: %s" % " -> ".join(cycle))
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in graph:
        if name not in state and name != "txfbtftp":
            visit(name, [name])


def test_no_class_is_longer_than_a_screenful_or_four():
    long = {}
    for name, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                long["%s.%s" % (name, node.name)] = node.end_lineno - node.lineno + 1
    assert long == {}


def test_only_the_public_modules_have_public_names():
    for name, _ in modules():
        if name in PUBLIC:
            continue
        assert any(part.startswith("_") for part in name.split(".")[1:]), name


def test_the_public_surface_is_complete_and_typed():
    assert sorted(set(txfbtftp.__all__)) == sorted(txfbtftp.__all__)
    for name in txfbtftp.__all__:
        assert hasattr(txfbtftp, name), name
    assert (PACKAGE / "py.typed").exists()
    for name in ("TFTPService", "ServerConfig", "IBackend", "IReader", "IWriter", "TransferRequest",
                 "FileNotFound", "FilesystemBackend", "SessionRecord", "__version__"):
        assert name in txfbtftp.__all__


@pytest.mark.parametrize("name", sorted(n for n, _ in modules() if n != "txfbtftp.__main__"))
def test_every_module_imports_on_its_own(name):
    importlib.import_module(name)


def test_library_code_never_imports_the_global_reactor():
    offenders = []
    # twistd's, a worker's, and the client commands' (cli.on_reactor)
    entry_points = {"txfbtftp._daemon.tap", "txfbtftp._daemon.worker", "txfbtftp._daemon.cli"}
    for name, path in modules():
        if name not in entry_points and "twisted.internet.reactor" in imports(path, type_checking=True):
            offenders.append(name)
    assert offenders == []
