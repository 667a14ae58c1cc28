"""The servers under test: --server specs resolved to a program, its command line and its provenance,
so that the table and the JSON say exactly what was measured."""
from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from benchlib.common import C_PEERS, HOST, REPO, Json, UsageError, log, output, read_text, write_text

# atftpd waits for packets with select(): a descriptor >= FD_SETSIZE (1024)
# aborts it ("bit out of range 0 - FD_SETSIZE on fd_set").  Each transfer
# holds two (socket, file), so 500 threads stay below it; the soft limit of
# 1024 (systemd's default) turns a stray excess into EMFILE, not a crash.
ATFTPD_ARGS = ["--maxthread", "500", "--retry-timeout", "1"]
ATFTPD_NOFILE = 1024


@dataclass
class ServerSpec:
    name: str
    kind: str  # "tftpd-hpa", "atftpd" or "txfbtftp"
    path: str  # from @PATH, "" for the default
    args: list[str]
    exe: str = ""  # resolved program: in.tftpd, atftpd, python or twistd
    nofile: int | None = None  # soft RLIMIT_NOFILE set by the wrapper
    info: Json = field(default_factory=dict)  # versions and provenance

    def argv(self, port: int | str, root: str) -> list[str]:
        if self.kind == "tftpd-hpa":
            return [self.exe, "-L", "-a", "%s:%s" % (HOST, port)] + self.args + ["-s", root]
        if self.kind == "atftpd":
            return ([self.exe, "--daemon", "--no-fork", "--logfile", "-", "--port", str(port),
                     "--bind-address", HOST] + ATFTPD_ARGS + self.args + [root])
        head = [self.exe, "-n", "--pidfile="] if os.path.basename(self.exe).startswith("twistd") \
            else [self.exe, "-m", "twisted"]
        return head + ["tftp", "--backend", "fs:" + root, "--port", str(port), "--interface", HOST] + self.args

    @property
    def is_c(self) -> bool:
        return self.kind in C_PEERS


def parse_server(text: str) -> ServerSpec:
    """NAME[@PATH][=ARGS]; see the docstring of run.py."""
    head, eq, args = text.partition("=")
    name, _, path = head.partition("@")
    name = name.strip()
    if not name or not all(ch.isalnum() or ch in "._-" for ch in name):
        raise UsageError("bad --server %r: NAME must be letters, digits, '.', '_' or '-'" % text)
    kind = next((k for k in C_PEERS if name == k or name.startswith(k + "-")), "txfbtftp")
    try:
        words = shlex.split(args) if eq else []
    except ValueError as e:
        raise UsageError("bad --server %r: %s" % (text, e)) from None
    return ServerSpec(name, kind, os.path.expanduser(path.strip()), words)


def resolve_tftpd_hpa(spec: ServerSpec) -> None:
    exe = spec.path or shutil.which("in.tftpd") or shutil.which("in.tftpd", path="/usr/sbin:/sbin") or ""
    if not exe or not os.access(exe, os.X_OK):
        raise UsageError("%s: in.tftpd not found (apt-get install tftpd-hpa)" % spec.name)
    spec.exe = os.path.abspath(exe)
    ver = (output([spec.exe, "-V"]).splitlines() or [""])[0]
    pkg = "" if spec.path else output(["dpkg-query", "-W", "-f", "${Version}", "tftpd-hpa"])
    spec.info = {"version": ver, "package": "tftpd-hpa " + pkg if pkg and " " not in pkg else ""}


def fetch_atftpd(cache: str) -> str:
    """atftpd from 'apt-get download atftpd' unpacked with 'dpkg -x' into CACHE/atftpd (once)."""
    d = os.path.join(cache, "atftpd")
    exe = os.path.join(d, "root", "usr", "sbin", "atftpd")
    if os.access(exe, os.X_OK):
        return exe
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise UsageError("atftpd: no apt-get/dpkg-deb to fetch it; give its binary as --server atftpd@PATH")
    log("fetching atftpd into %s (apt-get download atftpd; dpkg -x)" % d)
    os.makedirs(cache, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="atftpd.", dir=cache)
    os.chmod(tmp, 0o755)
    try:
        p = subprocess.run(["apt-get", "download", "atftpd"], cwd=tmp, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        debs = glob.glob(os.path.join(tmp, "atftpd_*.deb"))
        if p.returncode != 0 or not debs:
            raise UsageError("apt-get download atftpd failed: %s" % p.stdout.strip()[-300:])
        if subprocess.run(["dpkg-deb", "-x", debs[0], os.path.join(tmp, "root")]).returncode != 0:
            raise UsageError("dpkg-deb -x %s failed" % debs[0])
        write_text(os.path.join(tmp, "VERSION"), output(["dpkg-deb", "-f", debs[0], "Version"]) + "\n")
        os.rename(tmp, d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exe


def resolve_atftpd(spec: ServerSpec, cache: str) -> None:
    spec.exe = os.path.abspath(spec.path) if spec.path else fetch_atftpd(cache)
    ver = output([spec.exe, "-V"])
    if "atftp" not in ver:
        raise UsageError("%s: %s -V says %r (missing libraries? apt-get install libwrap0 libpcre2-8-0)"
                         % (spec.name, spec.exe, ver[-200:]))
    pkg = read_text(os.path.join(os.path.dirname(spec.exe), "..", "..", "..", "VERSION")) or ""
    spec.nofile = ATFTPD_NOFILE
    spec.info = {"version": ver.splitlines()[0], "package": ("atftpd " + pkg.strip()) if pkg.strip() else "",
                 "tuning": "--maxthread 500 --retry-timeout 1, RLIMIT_NOFILE soft %d" % ATFTPD_NOFILE}


def resolve_txfbtftp(spec: ServerSpec, scratch: str) -> None:
    """PATH (or this tree) -> twistd of its virtualenv if there is one, else python -m twisted."""
    p = spec.path or REPO
    if os.path.isdir(p):
        bins = [os.path.join(p, "bin"), os.path.join(p, ".venv", "bin")]
        exe = next((os.path.join(b, n) for n in ("twistd", "python") for b in bins
                    if os.access(os.path.join(b, n), os.X_OK)), "")
        if not exe and spec.path:
            raise UsageError("%s: %s holds neither bin/ (a virtualenv) nor .venv/bin/" % (spec.name, p))
        exe = exe or sys.executable
    else:
        exe = p
    if not os.access(exe, os.X_OK):
        raise UsageError("%s: %s is not executable" % (spec.name, exe))
    spec.exe = os.path.abspath(exe)
    py = spec.exe
    if os.path.basename(py).startswith("twistd"):
        py = os.path.join(os.path.dirname(py), "python")
        if not os.access(py, os.X_OK):
            raise UsageError("%s: no python beside %s" % (spec.name, spec.exe))
    probe = ("import json, platform, sys, twisted, txfbtftp; print(json.dumps({'python': platform.python_version(), "
             "'twisted': twisted.__version__, 'txfbtftp': getattr(txfbtftp, '__version__', ''), "
             "'module': txfbtftp.__file__}))")
    out = output([py, "-c", probe], cwd=scratch)  # not the repository: its twisted/ would shadow Twisted
    try:
        info = json.loads(out.splitlines()[-1])
    except (ValueError, IndexError):
        raise UsageError("%s: %s cannot import twisted and txfbtftp: %s" % (spec.name, py, out[-300:])) from None
    tree = os.path.dirname(os.path.dirname(info["module"]))
    commit = output(["git", "-C", tree, "rev-parse", "--short", "HEAD"])
    if commit and " " not in commit:
        # benchmarks/ does not change the server: only the rest makes it dirty
        if output(["git", "-C", tree, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks"]):
            commit += "+dirty"
        info["commit"] = commit
        # the last commit that changed the server (not only benchmarks/)
        info["server_commit"] = output(["git", "-C", tree, "log", "-1", "--format=%h", "--", ".", ":!benchmarks"])
    info["tree"] = tree
    spec.info = info
