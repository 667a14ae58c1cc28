"""The shared tools (tftpbench, tftpload): every server is measured by the same scenarios and the same
client, built from the shared source whether or not that directory is writable."""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from types import ModuleType

from benchlib.common import REPO, UsageError, log


def default_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "txfbtftp-bench")


def find_tools(arg: str) -> str:
    cands = [arg] if arg else [os.environ.get("TFTP_TOOLS", ""),
                               os.path.join(os.path.dirname(REPO), "shared", "tools")]
    for d in cands:
        if d and os.path.isfile(os.path.join(d, "tftpbench")):
            return os.path.abspath(d)
    raise UsageError("tftpbench not found in %s (set --tools or $TFTP_TOOLS)" % " or ".join(c for c in cands if c))


def load_tftpbench(tools: str) -> ModuleType:
    """tftpbench as a module (it has no .py suffix): SCENARIOS, SIZES, fixtures()."""
    path = os.path.join(tools, "tftpbench")
    loader = importlib.machinery.SourceFileLoader("tftpbench", path)
    spec = importlib.util.spec_from_loader("tftpbench", loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def ensure_tftpload(tools: str, cache: str) -> str:
    """Path of a tftpload binary built from the shared source.

    The shared directory's own binary if it is newer than tftpload.c; else
    built there if the directory is writable; else the source is copied to
    CACHE/tftpload-<hash of source> and built there (read-only shared tools).
    """
    src = os.path.join(tools, "tftpload")
    c_file = os.path.join(src, "tftpload.c")
    exe = os.path.join(src, "tftpload")
    if not os.path.isfile(c_file):
        raise UsageError("%s not found" % c_file)
    if os.access(exe, os.X_OK) and os.path.getmtime(exe) >= os.path.getmtime(c_file):
        return exe
    if os.access(src, os.W_OK):
        log("building tftpload in %s" % src)
        if subprocess.run(["make", "-s", "-C", src]).returncode == 0 and os.access(exe, os.X_OK):
            return exe
    with open(c_file, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    dst = os.path.join(cache, "tftpload-" + digest)
    exe = os.path.join(dst, "tftpload")
    if os.access(exe, os.X_OK):
        return exe
    log("building tftpload in %s (%s is read-only)" % (dst, src))
    os.makedirs(cache, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="tftpload.", dir=cache)
    for name in os.listdir(src):
        p = os.path.join(src, name)
        if os.path.isfile(p) and name != "tftpload":
            shutil.copy(p, tmp)
            os.chmod(os.path.join(tmp, name), 0o644)
    if subprocess.run(["make", "-s", "-C", tmp]).returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UsageError("building tftpload failed (a C compiler and make are needed)")
    try:
        os.rename(tmp, dst)
    except OSError:  # another run built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return exe


@dataclass
class Scenario:
    name: str
    file: str
    sessions: int
    concurrency: int
    extra: list[str]
    what: str

    @property
    def max_seconds(self) -> float:
        if "--max-seconds" in self.extra:
            return float(self.extra[self.extra.index("--max-seconds") + 1])
        return 120.0

    @property
    def windowsize(self) -> int:
        return int(self.extra[self.extra.index("--windowsize") + 1]) if "--windowsize" in self.extra else 0


def scenarios_from(bench: ModuleType, quick: bool) -> list[Scenario]:
    out = []
    for name, (fname, n, c, extra, what) in bench.SCENARIOS.items():
        if quick:
            if n == 1:
                fname = {"bench64.bin": "bench4.bin", "bench4.bin": "bench256k.bin"}.get(fname, fname)
            else:
                n, c = max(1, n // 10), max(1, c // 10)
                fname = {"bench4.bin": "bench1.bin"}.get(fname, fname)
        out.append(Scenario(name, fname, n, c, list(extra), what))
    return out
