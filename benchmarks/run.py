#!/usr/bin/env python3
"""Benchmark txfbtftp against the C TFTP servers tftpd-hpa and atftpd with tftpload.

usage: benchmarks/run.py [--server SPEC]... [--only a,b] [--quick] [--repeat N]
                         [--json OUT.json] [--rst OUT.rst] [more options, below]

Scenario-major: for each tftpbench scenario (../shared/tools/tftpbench; the
figures are tftpload's), every server runs back to back, each one started
afresh for that scenario on 127.0.0.1 and a free port in 17000-17999, serving
its own root directory of fixture files, so the servers of one scenario see
the same machine conditions.  With --repeat N each scenario runs N rounds,
the server order rotated every round; the table shows medians.

Servers (--server, repeatable; default: tftpd-hpa, atftpd, txfbtftp):
  NAME[@PATH][=ARGS]
  NAME "tftpd-hpa" or "tftpd-hpa-*" is tftpd-hpa, "atftpd" or "atftpd-*" is
  atftpd, any other NAME is txfbtftp.  ARGS (shlex-split) are added to the
  command line; PATH picks the program.
  tftpd-hpa  in.tftpd -L -a 127.0.0.1:PORT [ARGS] -s ROOT
             PATH: the in.tftpd binary (default: on PATH or in /usr/sbin)
  atftpd     atftpd --daemon --no-fork --logfile - --port PORT
             --bind-address 127.0.0.1 --maxthread 500 --retry-timeout 1
             [ARGS] ROOT, with a soft RLIMIT_NOFILE of 1024 (why: README.rst)
             PATH: the atftpd binary (default: atftpd from "apt-get download
             atftpd" unpacked with "dpkg -x" into the cache directory, once)
  txfbtftp   VENV/bin/twistd -n --pidfile= tftp --backend fs:ROOT
             --port PORT --interface 127.0.0.1 [ARGS]
             or, given a python: PYTHON -m twisted tftp ... (same arguments)
             PATH: a source tree holding .venv, a virtualenv, or a twistd or
             python executable (default: this tree, i.e. its .venv)
  Examples:
    --server tftpd-hpa --server atftpd --server txfbtftp
    --server "txfbtftp-w2=--workers 2"
    --server "before@/work/old-tree=--workers 2" --server "after=--workers 2"

Accounting: every server start gets its own cgroup, a child of the runner's
own (cgroup v2 for CPU and, where the v2 memory controller is available,
memory; else the v1 memory and cpuacct hierarchies); a wrapper shell writes
its pid into the cgroup(s) and execs the server, so forked children, workers
and threads all count.  Server CPU is cpu.stat usage_usec (v2) or
cpuacct.usage (v1) over tftpload's run; peak memory is memory.peak (v2) or
memory.max_usage_in_bytes (v1) over the server's life: every page charged to
it (anonymous, page cache it brought in, kernel), each counted once however
many processes share it.  Without usable cgroups (or with --accounting proc)
the fallback is /proc: CPU of the server's process session (its children's
included as far as /proc can see them), peak memory as summed VmRSS sampled
every 0.1 s; the output names the method used.

Table columns, per scenario and server: sessions ok/total, wall seconds,
MB/s (10^6 bytes/s, tftpload's), server CPU seconds, CPU seconds per GiB of
payload served by sessions that completed, peak memory MiB, 'other' (CPU
cores busy with anything but the server, tftpload and this runner: the
machine's noise), failures by kind.  Three ratios compare each txfbtftp
configuration with the best C peer for that figure in that scenario,
oriented so that >1 always means txfbtftp is better: MB/s txfbtftp/C; CPU s
per GiB C/txfbtftp (lower CPU is better); peak MiB C/txfbtftp.  A C peer
that failed sessions counts as best only if every C peer did; '*' marks a
figure from a run with failed sessions, '~' a run whose windowsize was
requested but not granted (the server ran lock-step).

--quick is a smoke test: every scenario at about a tenth of its size (a
tenth of the sessions and concurrency, smaller files for the single and WAN
transfers); its figures are not comparable with full runs.

Exit status: 0; 1 if a server failed to start or died during a scenario, or
tftpload gave no result (the run goes on; the table and JSON say where); 2 on
bad usage or missing tools; 130 if interrupted (what was measured is still
printed and written).  Every process started and cgroup created is removed
at the end, also on Ctrl-C and SIGTERM; cgroups left by a runner that was
SIGKILLed are removed by the next run.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from collections.abc import Callable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
PORTS = (17000, 17999)
C_PEERS = ("tftpd-hpa", "atftpd")
PROBE = "probe.bin"
CG_PREFIX = "txfbtftp-bench."
SAMPLE_S = 0.1
GiB = float(1 << 30)
MiB = float(1 << 20)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# atftpd waits for packets with select(): a descriptor >= FD_SETSIZE (1024)
# aborts it ("bit out of range 0 - FD_SETSIZE on fd_set").  Each transfer
# holds two (socket, file), so 500 threads stay below it; the soft limit of
# 1024 (systemd's default) turns a stray excess into EMFILE, not a crash.
ATFTPD_ARGS = ["--maxthread", "500", "--retry-timeout", "1"]
ATFTPD_NOFILE = 1024
# The wrapper every server starts through: optional soft RLIMIT_NOFILE, then
# its own pid into each cgroup.procs given, then exec the server.
WRAP = ('[ "$1" = - ] || ulimit -S -n "$1" || exit 125; shift; '
        'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"')

Json = dict[str, Any]


def log(msg: str) -> None:
    print("run.py: " + msg, file=sys.stderr, flush=True)


class UsageError(Exception):
    """Bad command line or a missing tool: exit status 2."""


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def output(argv: Sequence[str], cwd: str | None = None) -> str:
    """stdout+stderr of a short command, stripped; '' if it cannot run."""
    try:
        p = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, cwd=cwd, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return p.stdout.strip()


def sig_name(status: int | None) -> str:
    if status is None:
        return "running"
    if status < 0:
        try:
            return "killed by " + signal.Signals(-status).name
        except ValueError:
            return "killed by signal %d" % -status
    return "exit status %d" % status


def tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


# ------------------------------------------------------------------- tools

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


# ----------------------------------------------------------------- servers

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
    """NAME[@PATH][=ARGS]; see the module docstring."""
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


# -------------------------------------------------------------- accounting

@dataclass
class Mount:
    root: str
    point: str
    fstype: str
    supers: list[str]


def cgroup_mounts() -> list[Mount]:
    out = []
    for line in (read_text("/proc/self/mountinfo") or "").splitlines():
        left, _, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if len(f) >= 5 and len(r) >= 3 and r[0] in ("cgroup", "cgroup2"):
            out.append(Mount(f[3], f[4], r[0], r[2].split(",")))
    return out


def own_cgroups() -> dict[str, str]:
    """Controller (or '' for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out = {}
    for line in (read_text("/proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for ctl in (parts[1].split(",") if parts[1] else [""]):
                out[ctl] = parts[2]
    return out


def cg_dir(m: Mount, path: str) -> str | None:
    root = m.root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return None  # our cgroup is outside what is mounted here
    return os.path.normpath(m.point + "/" + path[len(root):])


def cg_file(d: str, name: str) -> str | None:
    return read_text(os.path.join(d, name))


def cg_pids(d: str) -> list[int]:
    return [int(x) for x in (cg_file(d, "cgroup.procs") or "").split()]


def kv(text: str | None) -> dict[str, int]:
    out = {}
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        if v.strip().lstrip("-").isdigit():
            out[k] = int(v)
    return out


@dataclass
class Hier:
    """One cgroup hierarchy the runner uses: its role and the bench directory created in it."""
    version: int  # 2 or 1
    roles: list[str]  # of "cpu", "memory", "pids"
    base: str  # <parent>/txfbtftp-bench.<runner pid>


class Accounting:
    """Chooses where CPU and memory come from and makes one group per server start."""

    def __init__(self, mode: str) -> None:
        self.hiers: list[Hier] = []
        self.cpu_method = "proc"
        self.mem_method = "proc"
        self.notes: list[str] = []
        if mode == "proc":
            self.notes.append("cgroups not used (--accounting proc)")
        else:
            self._discover()
        if self.cpu_method == "proc":
            self.cpu_method = "/proc utime+stime+cutime+cstime of the server's session (fallback)"
        if self.mem_method == "proc":
            self.mem_method = "/proc summed VmRSS of the server's session, sampled every 0.1 s (fallback)"

    def _mkbase(self, parent: str) -> str | None:
        base = os.path.join(parent, CG_PREFIX + str(os.getpid()))
        try:
            os.mkdir(base)
        except FileExistsError:
            pass
        except OSError as e:
            self.notes.append("cannot create a cgroup in %s: %s" % (parent, e.strerror))
            return None
        return base

    def _discover(self) -> None:
        mounts, own = cgroup_mounts(), own_cgroups()
        for m in mounts:  # cgroups left by runners that were SIGKILLed
            d = cg_dir(m, own.get("" if m.fstype == "cgroup2" else next(
                (c for c in m.supers if c in ("memory", "cpuacct")), "-"), "/"))
            if d:
                remove_stale(d)
        v2 = next((m for m in mounts if m.fstype == "cgroup2"), None)
        if v2 is not None and "" in own:
            own_dir = cg_dir(v2, own[""])
            if own_dir:
                # memory needs a parent that hands the controller down; the
                # runner's own cgroup (it holds processes) usually cannot,
                # so look up the tree, stopping at the mount point.
                parent, d = own_dir, own_dir
                while True:
                    if "memory" in (cg_file(d, "cgroup.subtree_control") or "").split():
                        parent = d
                        break
                    if os.path.normpath(d) == os.path.normpath(v2.point):
                        break
                    d = os.path.dirname(d)
                base = self._mkbase(parent)
                if base and os.path.exists(os.path.join(base, "cpu.stat")):
                    roles = ["cpu", "pids"]
                    if "memory" in (cg_file(base, "cgroup.controllers") or "").split():
                        try:
                            write_text(os.path.join(base, "cgroup.subtree_control"), "+memory")
                            roles.append("memory")
                        except OSError as e:
                            self.notes.append("cannot enable the v2 memory controller: %s" % e.strerror)
                    self.hiers.append(Hier(2, roles, base))
                    self.cpu_method = "cgroup v2 cpu.stat usage_usec"
                    if "memory" in roles:
                        self.mem_method = "cgroup v2 memory.peak"  # checked per group (kernel >= 5.19)
                    else:
                        self.notes.append("cgroup v2 has no memory controller here (%s)" % parent)
        for ctl in ("memory", "cpuacct"):
            if ctl == "memory" and self.mem_method != "proc" or ctl == "cpuacct" and self.cpu_method != "proc":
                continue
            m1 = next((m for m in mounts if m.fstype == "cgroup" and ctl in m.supers), None)
            d1 = cg_dir(m1, own.get(ctl, "")) if m1 is not None and ctl in own else None
            base = self._mkbase(d1) if d1 else None
            if base is None:
                continue
            if ctl == "memory" and os.path.exists(os.path.join(base, "memory.max_usage_in_bytes")):
                self.hiers.append(Hier(1, ["memory", "pids"], base))
                self.mem_method = "cgroup v1 memory.max_usage_in_bytes"
            elif ctl == "cpuacct" and os.path.exists(os.path.join(base, "cpuacct.usage")):
                self.hiers.append(Hier(1, ["cpu", "pids"], base))
                self.cpu_method = "cgroup v1 cpuacct.usage"
            else:
                os.rmdir(base)

    def describe(self) -> Json:
        return {"cpu": self.cpu_method, "memory": self.mem_method, "notes": self.notes,
                "cgroups": [{"version": h.version, "roles": h.roles, "dir": h.base} for h in self.hiers]}

    def new_group(self, label: str) -> Group:
        dirs = []
        for h in self.hiers:
            d = os.path.join(h.base, label)
            os.mkdir(d)
            dirs.append((h, d))
        return Group(dirs, self)

    def close(self) -> None:
        for h in self.hiers:
            remove_tree(h.base)


class Group:
    """The cgroup(s) of one server start, or its process session when there are none."""

    def __init__(self, dirs: list[tuple[Hier, str]], acct: Accounting) -> None:
        self.dirs = dirs
        self.acct = acct
        self.leader = 0  # the server's pid (a session leader) once started
        self.tree: ProcTree | None = None  # the fallback, when there are no cgroups
        self.cpu_dir = next((d for h, d in dirs if "cpu" in h.roles), None)
        self.cpu_v2 = any(h.version == 2 and "cpu" in h.roles for h, _ in dirs)
        self.mem_dir = next((d for h, d in dirs if "memory" in h.roles), None)
        self.mem_v2 = any(h.version == 2 and "memory" in h.roles for h, _ in dirs)
        self.pid_dir = next((d for h, d in dirs if "pids" in h.roles), None)
        self.has_peak = bool(self.mem_dir) and os.path.exists(
            os.path.join(self.mem_dir or "", "memory.peak" if self.mem_v2 else "memory.max_usage_in_bytes"))
        self.mem_method = acct.mem_method
        if self.mem_dir and not self.has_peak:
            self.mem_method = "cgroup v2 memory.current, sampled every 0.1 s (no memory.peak in this kernel)"

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for _, d in self.dirs]

    def pids(self) -> list[int]:
        if self.pid_dir:
            return cg_pids(self.pid_dir)
        return session_pids(self.leader) if self.leader else []

    def start(self, pid: int) -> None:
        self.leader = pid
        if not self.dirs:
            self.tree = ProcTree(pid)

    def cpu(self) -> Json:
        """CPU seconds used so far by everything that ran in the group: total, user, system."""
        if self.cpu_dir and self.cpu_v2:
            s = kv(cg_file(self.cpu_dir, "cpu.stat"))
            return {"cpu_s": s.get("usage_usec", 0) / 1e6, "user_s": s.get("user_usec", 0) / 1e6,
                    "system_s": s.get("system_usec", 0) / 1e6}
        if self.cpu_dir:
            st = kv(cg_file(self.cpu_dir, "cpuacct.stat"))
            return {"cpu_s": int(cg_file(self.cpu_dir, "cpuacct.usage") or 0) / 1e9,
                    "user_s": st.get("user", 0) / CLK_TCK, "system_s": st.get("system", 0) / CLK_TCK}
        scan = self.tree.scan() if self.tree else {}
        return {k: scan.get(k, 0.0) for k in ("cpu_s", "user_s", "system_s")}

    def mem_peak(self) -> int | None:
        """Peak bytes charged over the group's life (None: only the sampler knows)."""
        if self.mem_dir and self.has_peak:
            raw = cg_file(self.mem_dir, "memory.peak" if self.mem_v2 else "memory.max_usage_in_bytes")
            return int(raw) if raw and raw.strip().isdigit() else None
        return None

    def mem_now(self) -> Json:
        """One memory sample: bytes charged now, anonymous bytes, and (v1) kernel bytes."""
        if self.mem_dir:
            st = kv(cg_file(self.mem_dir, "memory.stat"))
            cur = cg_file(self.mem_dir, "memory.current" if self.mem_v2 else "memory.usage_in_bytes")
            out = {"current": int(cur) if cur and cur.strip().isdigit() else 0,
                   "anon": st.get("anon", 0) if self.mem_v2 else st.get("total_rss", 0)}
            if not self.mem_v2:
                k = cg_file(self.mem_dir, "memory.kmem.usage_in_bytes")
                out["kernel"] = int(k) if k and k.strip().isdigit() else 0
            else:
                out["kernel"] = st.get("kernel", 0)
            return out
        scan = self.tree.scan() if self.tree else {}
        return {k: scan.get(k, 0) for k in ("current", "anon", "hwm_max_process")}

    def kill(self) -> None:
        for _, d in self.dirs:
            if os.path.exists(os.path.join(d, "cgroup.kill")):
                try:
                    write_text(os.path.join(d, "cgroup.kill"), "1")
                except OSError:
                    pass
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def wait_empty(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pids():
                return True
            self.kill()
            time.sleep(0.05)
        return not self.pids()

    def remove(self) -> None:
        for _, d in reversed(self.dirs):
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def remove_tree(d: str) -> None:
    """Kill what runs in cgroup directory d and its children, then remove them, deepest first."""
    if not os.path.isdir(d):
        return
    for sub in sorted((os.path.join(d, x) for x in os.listdir(d) if os.path.isdir(os.path.join(d, x))),
                      reverse=True):
        remove_tree(sub)
    for _ in range(100):
        pids = cg_pids(d)
        if not pids:
            break
        if os.path.exists(os.path.join(d, "cgroup.kill")):
            try:
                write_text(os.path.join(d, "cgroup.kill"), "1")
            except OSError:
                pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.05)
    for _ in range(50):
        try:
            os.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
    log("could not remove cgroup %s" % d)


def remove_stale(parent: str) -> None:
    """Remove txfbtftp-bench.<pid> cgroups under parent whose runner is gone."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if name.startswith(CG_PREFIX) and name[len(CG_PREFIX):].isdigit():
            pid = int(name[len(CG_PREFIX):])
            if pid != os.getpid() and not os.path.exists("/proc/%d" % pid):
                log("removing cgroup %s left by an earlier run" % os.path.join(parent, name))
                remove_tree(os.path.join(parent, name))


def session_pids(sid: int) -> list[int]:
    """Processes of session sid (the fallback's view of a server and its children)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = read_text("/proc/%s/stat" % d)
            if st:
                rest = st[st.rfind(")") + 2:].split()
                if len(rest) > 3 and int(rest[3]) == sid:
                    out.append(int(d))
    return out


class ProcTree:
    """The /proc fallback: CPU and memory of a server's process session, without cgroups.

    A scan reads /proc/PID/stat, schedstat and status of the server's
    session.  CPU used so far is summed over the live processes: their own
    time (utime+stime, or the main thread's schedstat run time when larger:
    stat counts in 1/CLK_TCK s, which loses up to 10 ms per short-lived
    child) plus cutime+cstime (children they reaped).  Processes gone since
    the previous scan whose parent does not wait for them (it ignores
    SIGCHLD, as tftpd-hpa does) or is gone too keep the figure seen at their
    last scan: the sampler scans every 0.1 s, so this undercounts what such
    children used after their last scan.  Memory is the summed VmRSS (shared
    pages once per process: it overstates forking servers), the summed
    RssAnon and the largest VmHWM of one process.
    """

    def __init__(self, sid: int) -> None:
        self.sid = sid
        # (pid, start time) -> (CPU s, user s, system s, ppid)
        self.live: dict[tuple[int, str], tuple[float, float, float, int]] = {}
        self.ignores_sigchld: dict[int, bool] = {}
        self.lost = (0.0, 0.0, 0.0)  # processes gone without being reaped into a cutime
        self.lock = threading.Lock()

    def scan(self) -> Json:
        rss = anon = hwm = 0
        live: dict[tuple[int, str], tuple[float, float, float, int]] = {}
        ign: dict[int, bool] = {}
        with self.lock:
            for pid in session_pids(self.sid):
                st = read_text("/proc/%d/stat" % pid)
                if not st:
                    continue
                f = st[st.rfind(")") + 2:].split()
                user, system = (int(f[11]) + int(f[13])) / CLK_TCK, (int(f[12]) + int(f[14])) / CLK_TCK
                own = (int(f[11]) + int(f[12])) / CLK_TCK
                ss = (read_text("/proc/%d/schedstat" % pid) or "").split()
                if ss and ss[0].isdigit():
                    own = max(own, int(ss[0]) / 1e9)
                live[(pid, f[19])] = (own + (int(f[13]) + int(f[14])) / CLK_TCK, user, system, int(f[1]))
                m = (read_text("/proc/%d/statm" % pid) or "").split()
                if len(m) >= 3:
                    rss += int(m[1]) * PAGE
                    anon += (int(m[1]) - int(m[2])) * PAGE
                for line in (read_text("/proc/%d/status" % pid) or "").splitlines():
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]) * 1024)
                    elif line.startswith("SigIgn:"):
                        ign[pid] = bool(int(line.split()[1], 16) & (1 << (signal.SIGCHLD - 1)))
            alive = {pid for pid, _ in live}
            for key, v in self.live.items():
                if key not in live and (v[3] not in alive or self.ignores_sigchld.get(v[3], True)):
                    self.lost = (self.lost[0] + v[0], self.lost[1] + v[1], self.lost[2] + v[2])
            self.live, self.ignores_sigchld = live, ign
            tot = [self.lost[i] + sum(v[i] for v in live.values()) for i in range(3)]
        return {"current": rss, "anon": anon, "hwm_max_process": hwm,
                "cpu_s": tot[0], "user_s": tot[1], "system_s": tot[2]}


class Sampler(threading.Thread):
    """Calls fn every SAMPLE_S seconds and keeps the maximum of each figure it returns."""

    def __init__(self, fn: Callable[[], Json]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.stop_evt = threading.Event()
        self.peak: dict[str, int] = {}
        self.n = 0

    def sample(self) -> None:
        for k, v in self.fn().items():
            self.peak[k] = max(self.peak.get(k, 0), v)
        self.n += 1

    def run(self) -> None:
        while not self.stop_evt.wait(SAMPLE_S):
            self.sample()

    def stop(self) -> Json:
        self.stop_evt.set()
        self.join()
        self.sample()
        return dict(self.peak, samples=self.n)


# ----------------------------------------------------------------- machine

def cpu_times() -> tuple[float, float]:
    """(busy, steal) seconds of the whole machine so far, from /proc/stat."""
    f = [int(x) for x in (read_text("/proc/stat") or "cpu 0").splitlines()[0].split()[1:]]
    f += [0] * (8 - len(f))
    idle = f[3] + f[4]
    return (sum(f[:8]) - idle) / CLK_TCK, f[7] / CLK_TCK


def machine_info() -> Json:
    cpuinfo = read_text("/proc/cpuinfo") or ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) for line in (read_text("/proc/meminfo") or "").splitlines()
                if line.startswith("MemTotal:")), 0)
    osr = read_text("/etc/os-release") or ""
    distro = next((line.split("=", 1)[1].strip('"') for line in osr.splitlines()
                   if line.startswith("PRETTY_NAME=")), "")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {"cpu_model": model, "cpus": os.cpu_count(), "cpus_usable": usable, "kernel": platform.release(),
            "os": distro, "memory_gib": round(mem / 1048576, 1), "hostname": socket.gethostname(),
            "runner_python": platform.python_version(), "loadavg_at_start": (read_text("/proc/loadavg") or "").strip(),
            "nofile_limit": list(resource.getrlimit(resource.RLIMIT_NOFILE))}


# ------------------------------------------------------------------ running

def free_port(used: set[int]) -> int:
    for _ in range(500):
        port = random.randint(*PORTS)
        if port in used:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((HOST, port))
        except OSError:
            continue
        finally:
            s.close()
        used.add(port)
        return port
    raise RuntimeError("no free UDP port in %d-%d" % PORTS)


def udp_inodes(port: int) -> set[str]:
    """Socket inodes bound to HOST:port (or the wildcard), from /proc/net/udp."""
    want = {"%08X:%04X" % (int.from_bytes(socket.inet_aton(a), "little"), port) for a in (HOST, "0.0.0.0")}
    out = set()
    for line in (read_text("/proc/net/udp") or "").splitlines()[1:]:
        f = line.split()
        if len(f) > 9 and f[1] in want:
            out.add(f[9])
    return out


def owns_port(pids: Callable[[], list[int]], port: int) -> bool:
    """Whether one of pids() holds the socket listening on port (and not, say, a system service).

    Tried a few times: /proc/net/udp is read in chunks, and while other
    programs open and close sockets by the thousand a line can be skipped.
    """
    for _ in range(10):
        want = {"socket:[%s]" % i for i in udp_inodes(port)}
        for pid in pids():
            try:
                fds = os.listdir("/proc/%d/fd" % pid)
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink("/proc/%d/fd/%s" % (pid, fd)) in want:
                        return True
                except OSError:
                    pass
        time.sleep(0.05)
    return False


class Runner:
    """Starts servers, runs tftpload, and keeps track of everything to clean up."""

    def __init__(self, args: argparse.Namespace, tftpload: str, acct: Accounting, workdir: str) -> None:
        self.args = args
        self.tftpload = tftpload
        self.acct = acct
        self.workdir = workdir
        self.ports: set[int] = set()
        self.proc: subprocess.Popen[bytes] | None = None
        self.group: Group | None = None
        self.load: subprocess.Popen[str] | None = None
        self.ru_base: Any | None = None  # RUSAGE_CHILDREN after the last child other than the server was reaped

    def probe(self, port: int, root: str) -> tuple[bool, str]:
        p = subprocess.run([self.tftpload, "--host", HOST, "--port", str(port), "--file", PROBE,
                            "--verify", os.path.join(root, PROBE), "--timeout-ms", "250", "--retries", "1",
                            "--max-seconds", "2", "--json", "--quiet"], capture_output=True, text=True)
        try:
            d = json.loads(p.stdout)
        except ValueError:
            return False, "tftpload: " + (p.stderr or p.stdout)[-200:]
        if d.get("ok") == 1:
            return True, ""
        errs = d.get("server_errors") or []
        if errs:
            return False, "server error: %s" % errs[0].get("message")
        return False, "; ".join("%s: %s" % kv for kv in (d.get("failure_messages") or {}).items()) or "no reply"

    def start(self, spec: ServerSpec, root: str, label: str, rec: Json) -> bool:
        """Start spec in a new group; True once it serves the probe file from its port."""
        last = ""
        for attempt in range(1, 4):
            logpath = os.path.join(self.workdir, "logs", "%s.%d.log" % (label, attempt))
            try:
                port = free_port(self.ports)
                argv = spec.argv(port, root)
                rec.update(port=port, cmd=argv, start_attempts=attempt, log=logpath)
                self.group = self.acct.new_group("%s.%d" % (label, attempt))
                wrapped = ["/bin/sh", "-c", WRAP, "bench-wrap", str(spec.nofile or "-")] + \
                    self.group.procs_files() + ["--"] + argv
                t0 = time.monotonic()
                with open(logpath, "wb") as logf:
                    logf.write(("# %s\n" % shlex.join(argv)).encode())
                    logf.flush()
                    # cwd outside the repository: its twisted/ folder would
                    # shadow Twisted for "python -m twisted".
                    self.proc = subprocess.Popen(wrapped, stdin=subprocess.DEVNULL, stdout=logf,
                                                 stderr=subprocess.STDOUT, start_new_session=True,
                                                 cwd=os.path.join(self.workdir, "run"))
            except (OSError, RuntimeError) as e:
                last = str(e)
                rec.setdefault("events", []).append("start attempt %d failed: %s" % (attempt, last))
                self.stop(rec)
                continue
            self.group.start(self.proc.pid)
            deadline = t0 + self.args.start_timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last = sig_name(self.proc.returncode)
                    break
                ok, last = self.probe(port, root)
                if ok:
                    if not owns_port(self.group.pids, port):
                        last = "something outside the server's cgroup answers on port %d" % port
                        break
                    rec["startup_s"] = round(time.monotonic() - t0, 3)
                    return True
                time.sleep(0.2)
            rec.setdefault("events", []).append("start attempt %d failed: %s" % (attempt, last))
            rec["log_tail"] = tail(logpath)
            exited = self.proc.poll() is not None
            self.stop(rec)
            if exited and attempt >= 2:
                break  # it exits by itself: a third try will not help
        rec["status"] = "start-failed"
        rec["error"] = "did not start: %s" % last
        return False

    def stop(self, rec: Json) -> None:
        """SIGTERM the server, SIGKILL what is left in its group, reap it, remove the group."""
        proc, group = self.proc, self.group
        if proc is not None:
            r0 = self.ru_base or resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=self.args.stop_timeout)
                except subprocess.TimeoutExpired:
                    rec.setdefault("events", []).append("did not exit within %.0f s of SIGTERM; killed"
                                                        % self.args.stop_timeout)
            if group is not None:
                group.kill()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                rec.setdefault("events", []).append("pid %d could not be reaped" % proc.pid)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            rec.setdefault("rusage_reaped_cpu_s", round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 3))
            self.ru_base = None
        if group is not None:
            if group.dirs:
                if not group.wait_empty():
                    rec.setdefault("events", []).append("processes left in its cgroup: %s" % group.pids())
                rec["cpu_lifetime_s"] = round(group.cpu()["cpu_s"], 3)
            group.remove()
        self.proc = self.group = None

    def run_load(self, sc: Scenario, port: int, root: str) -> tuple[Json | None, str]:
        cmd = [self.tftpload, "--host", HOST, "--port", str(port), "--file", sc.file,
               "--sessions", str(sc.sessions), "--concurrency", str(sc.concurrency),
               "--verify", os.path.join(root, sc.file), "--json", "--quiet"] + sc.extra
        self.load = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        try:
            out, err = self.load.communicate(timeout=sc.max_seconds + 60)
        except subprocess.TimeoutExpired:
            self.load.kill()
            self.load.communicate()
            return None, "tftpload did not finish within --max-seconds + 60 s"
        except BaseException:
            self.load.kill()
            self.load.wait()
            raise
        finally:
            self.load = None
        try:
            return json.loads(out), ""
        except ValueError:
            return None, "tftpload failed: " + (err or out)[-300:]

    def run_one(self, spec: ServerSpec, sc: Scenario, rep: int, root: str) -> Json:
        label = "%s.%s.%d" % (spec.name, sc.name, rep)
        rec: Json = {"scenario": sc.name, "server": spec.name, "round": rep, "started": now_iso(),
                     "status": "ok", "events": []}
        if not self.start(spec, root, label, rec):
            return rec
        group, proc = self.group, self.proc
        assert group is not None and proc is not None
        try:
            mem_idle = group.mem_now()
            sampler = Sampler(group.mem_now)
            sampler.sample()
            sampler.start()
            c0, busy0 = group.cpu(), cpu_times()
            ru0, self0 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.monotonic()
            try:
                result, err = self.run_load(sc, rec["port"], root)
            finally:
                wall = time.monotonic() - t0
                c1, busy1 = group.cpu(), cpu_times()
                ru1, self1 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
                self.ru_base = ru1
                peaks = sampler.stop()
            time.sleep(self.args.settle)
            c2 = group.cpu()
            peak = group.mem_peak()
            cpu = c1["cpu_s"] - c0["cpu_s"]
            client = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
            me = self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime
            busy = busy1[0] - busy0[0]
            rec.update({
                "server_cpu_s": round(cpu, 3),
                "server_user_s": round(c1["user_s"] - c0["user_s"], 3),
                "server_system_s": round(c1["system_s"] - c0["system_s"], 3),
                "server_cpu_settle_s": round(c2["cpu_s"] - c1["cpu_s"], 3),
                "mem_peak_mib": round((peak if peak is not None else peaks.get("current", 0)) / MiB, 2),
                "mem_method": group.mem_method,
                "mem_idle_mib": round(mem_idle.get("current", 0) / MiB, 2),
                "anon_peak_sampled_mib": round(peaks.get("anon", 0) / MiB, 2),
                "mem_samples": peaks.get("samples", 0),
                "client_cpu_s": round(client, 3), "runner_cpu_s": round(me, 3),
                "machine_busy_s": round(busy, 3), "steal_s": round(busy1[1] - busy0[1], 3),
                "other_cores": round(max(0.0, busy - cpu - client - me) / wall, 2) if wall > 0 else None,
                "load_wall_s": round(wall, 3),
            })
            if "kernel" in peaks:
                rec["kernel_peak_sampled_mib"] = round(peaks["kernel"] / MiB, 2)
            if "hwm_max_process" in peaks:
                rec["vmhwm_max_process_mib"] = round(peaks["hwm_max_process"] / MiB, 2)
            if result is None:
                rec["status"], rec["error"] = "error", err
            else:
                rec["tftpload"] = result
                ok_bytes = int(result.get("ok", 0)) * os.path.getsize(os.path.join(root, sc.file))
                rec["ok_bytes"] = ok_bytes
                rec["cpu_s_per_gib"] = round(cpu / (ok_bytes / GiB), 3) if ok_bytes else None
            if proc.poll() is not None:
                rec["status"] = "crashed"
                rec["events"].append("server %s during %s" % (sig_name(proc.returncode), sc.name))
                rec["exit_status"] = proc.returncode
                rec["log_tail"] = tail(rec["log"])
        finally:
            self.stop(rec)
        return rec

    def cleanup(self) -> None:
        if self.load is not None:
            self.load.kill()
            self.load.wait()
        if self.proc is not None or self.group is not None:
            self.stop({})


# ----------------------------------------------------------------- summary

def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def summarize(runs: list[Json], sc: Scenario, spec: ServerSpec) -> Json:
    mine = [r for r in runs if r["scenario"] == sc.name and r["server"] == spec.name]
    res = [r for r in mine if r.get("tftpload")]
    s: Json = {"rounds": len(mine), "measured": len(res)}
    if not mine:
        return s
    s["start_failed"] = sum(r["status"] == "start-failed" for r in mine)
    s["crashed"] = sum(r["status"] == "crashed" for r in mine)
    s["errors"] = [r["error"] for r in mine if r.get("error")]
    if not res:
        return s
    fails: dict[str, int] = {}
    why: dict[str, str] = {}
    for r in res:
        t = r["tftpload"]
        for k, v in (t.get("failures") or {}).items():
            if v:
                fails[k] = fails.get(k, 0) + v
                why.setdefault(k, (t.get("failure_messages") or {}).get(k, ""))
        if t.get("not_started"):
            fails["not_started"] = fails.get("not_started", 0) + t["not_started"]
    t0 = res[0]["tftpload"]
    s.update({
        "ok": sum(r["tftpload"]["ok"] for r in res),
        "total": sum(r["tftpload"]["sessions"] for r in res),
        "wall_s": median([r["tftpload"]["wall_s"] for r in res]),
        "MBps": median([r["tftpload"]["throughput_MBps"] for r in res]),
        "server_cpu_s": median([r["server_cpu_s"] for r in res]),
        "cpu_s_per_gib": median([r["cpu_s_per_gib"] for r in res if r.get("cpu_s_per_gib") is not None]),
        "mem_peak_mib": median([r["mem_peak_mib"] for r in res]),
        "other_cores": median([r["other_cores"] for r in res if r.get("other_cores") is not None]),
        "failures": fails,
        "failure_messages": why,
        "unknown_tid": sum(r["tftpload"].get("unknown_tid", 0) for r in res),
        "server_errors": [e for r in res for e in r["tftpload"].get("server_errors") or []],
        "no_window": bool(sc.windowsize) and (t0.get("negotiated") or {}).get("windowsize_max", 1) <= 1,
    })
    s["clean"] = s["ok"] == s["total"] and not s["crashed"]
    return s


RATIOS = (("MBps", "MB/s", True), ("cpu_s_per_gib", "CPU/GiB", False), ("mem_peak_mib", "peak", False))


def add_ratios(summary: dict[str, dict[str, Json]], specs: list[ServerSpec]) -> None:
    """Each txfbtftp configuration against the best C peer, per figure: >1 = txfbtftp better."""
    for per in summary.values():
        peers = [per[s.name] for s in specs if s.is_c and per.get(s.name, {}).get("measured")]
        names = [s.name for s in specs if s.is_c and per.get(s.name, {}).get("measured")]
        clean = [i for i, p in enumerate(peers) if p["clean"]]
        pool = clean or list(range(len(peers)))
        for s in specs:
            me = per.get(s.name) or {}
            if s.is_c or not me.get("measured"):
                continue
            me["vs_best_c"] = {}
            for key, _, higher in RATIOS:
                cands = [(peers[i][key], names[i]) for i in pool if peers[i].get(key)]
                mine = me.get(key)
                if not cands or not mine:
                    continue
                val, who = (max if higher else min)(cands)
                me["vs_best_c"][key] = {"ratio": round(mine / val if higher else val / mine, 3), "peer": who,
                                        "peer_value": val, "flagged": not me["clean"] or not clean}


def fmt(v: float | None, nd: int = 2) -> str:
    if v is None:
        return "-"
    if nd == 2 and abs(v) >= 100:
        return "%.0f" % v if abs(v) >= 1000 else "%.1f" % v
    return "%.*f" % (nd, v)


HEAD = ["scenario", "server", "ok", "wall s", "MB/s", "CPU s", "CPU s/GiB", "peak MiB", "other",
        "MB/s x", "CPU/GiB x", "peak x", "failures, notes"]


def failure_note(kind: str, n: int, msg: str) -> str:
    """'timeout 735 (waiting for DATA)': the kind, the count and what tftpload said of the first one."""
    if kind == "timeout" and "(" in msg:
        msg = msg[msg.index("(") + 1:].rstrip(")")
    elif kind in ("server_error", "aborted"):
        msg = ""  # server errors are listed with their messages; aborted is --max-seconds
    return "%s %d%s" % (kind, n, " (%s)" % msg if msg else "")


def table_rows(scs: list[Scenario], specs: list[ServerSpec], summary: dict[str, dict[str, Json]]) -> list[list[str]]:
    rows = []
    for sc in scs:
        first = True
        for spec in specs:
            s = summary.get(sc.name, {}).get(spec.name)
            if not s or not s.get("rounds"):
                continue
            name = sc.name if first else ""
            first = False
            if not s.get("measured"):
                rows.append([name, spec.name, "-", "-", "-", "-", "-", "-", "-", "", "", "",
                             "; ".join(sorted(set(s.get("errors") or ["no result"])))[:120]])
                continue
            mark = ("" if s["clean"] else "*") + ("~" if s["no_window"] else "")
            notes = [failure_note(k, n, s.get("failure_messages", {}).get(k, ""))
                     for k, n in sorted(s["failures"].items())]
            msgs = sorted({e.get("message", "") for e in s["server_errors"] if e.get("message")})
            if msgs:
                notes.append("server errors: " + ", ".join(repr(m) for m in msgs[:3]))
            if s.get("unknown_tid"):
                notes.append("packets from unknown TIDs %d" % s["unknown_tid"])
            if s["no_window"]:
                notes.append("windowsize not granted")
            if s["crashed"]:
                notes.append("server died in %d/%d rounds" % (s["crashed"], s["rounds"]))
            if s["start_failed"]:
                notes.append("failed to start in %d/%d rounds" % (s["start_failed"], s["rounds"]))
            ratios = []
            for key, _, _ in RATIOS:
                r = (s.get("vs_best_c") or {}).get(key)
                ratios.append("" if not r else "%.2f%s %s" % (r["ratio"], "*" if r["flagged"] else "", r["peer"]))
            rows.append([name, spec.name, "%d/%d" % (s["ok"], s["total"]), fmt(s["wall_s"]) + mark,
                         fmt(s["MBps"], 1) + mark, fmt(s["server_cpu_s"]), fmt(s["cpu_s_per_gib"]),
                         fmt(s["mem_peak_mib"], 1), fmt(s["other_cores"])] + ratios + ["; ".join(notes)])
    return rows


LEGEND = [
    "ok: sessions completed and verified / sessions; wall s and MB/s (10^6 B/s): tftpload's figures.",
    "CPU s: server CPU (user+system, all its processes and threads) while tftpload ran; "
    "CPU s/GiB: that per GiB served by completed sessions (lower is better).",
    "peak MiB: the server's peak memory over its life (all its processes, shared pages once); "
    "other: cores busy with anything else on the machine (noise).",
    "x columns: txfbtftp vs the best C peer for that figure, >1 = txfbtftp better: "
    "MB/s txfbtftp/C, CPU/GiB C/txfbtftp, peak C/txfbtftp.",
    "* some sessions failed (or the server died) in that run; ~ windowsize requested but not granted (lock-step).",
]


def print_table(rows: list[list[str]], out: Any = sys.stdout) -> None:
    widths = [max(len(r[i]) for r in [HEAD] + rows) for i in range(len(HEAD))]

    def line(r: list[str]) -> str:
        cells = [c.ljust(w) if i in (0, 1, len(HEAD) - 1) else c.rjust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        return "  ".join(cells).rstrip()
    print(line(HEAD), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print(line(r), file=out)
    for text in LEGEND:
        print(text, file=out)


def rst_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`").replace("|", "\\|").replace("_", "\\_")


def render_rst(report: Json, rows: list[list[str]]) -> str:
    m = report["machine"]
    acct = report["accounting"]
    out = ["Benchmark results (%s)" % report["started"][:10], "", ".. Generated by benchmarks/run.py; "
           "the raw figures are in the JSON file written by the same run.", "",
           ":Date: %s to %s" % (report["started"], report.get("finished", "")),
           ":Machine: %s, %s CPUs (%s usable), %.1f GiB RAM; %s; Linux %s" % (
               m["cpu_model"], m["cpus"], m["cpus_usable"], m["memory_gib"], m["os"], m["kernel"]),
           ":Load average at start: %s" % m["loadavg_at_start"]]
    for name, info in report["servers"].items():
        if info["kind"] == "txfbtftp":
            commit = info.get("commit", "?")
            if info.get("server_commit") and not commit.startswith(info["server_commit"]):
                commit += ", server code as of %s" % info["server_commit"]
            desc = "txfbtftp %s (tree %s), Python %s, Twisted %s" % (
                commit, info.get("tree", "?"), info.get("python", "?"), info.get("twisted", "?"))
        else:
            desc = "%s%s" % (info.get("version", ""), " (%s)" % info["package"] if info.get("package") else "")
            if info.get("tuning"):
                desc += "; %s" % info["tuning"]
        out.append(":%s: ``%s``; %s" % (name, shlex.join(info["cmd"]), rst_escape(desc)))
    out += [":Load: tftpload on the same machine, %s round(s)%s; server and client on 127.0.0.1" % (
                report["repeat"], ", --quick (reduced sizes: a smoke test)" if report["quick"] else ""),
            ":CPU accounting: %s" % acct.get("cpu", "-"), ":Memory accounting: %s" % acct.get("memory", "-"), "",
            "Scenarios (tftpbench):", ""]
    for name, sc in report["scenarios"].items():
        out.append("- %s: %s (%d session(s), %d at a time, %s)" % (
            name, rst_escape(sc["what"]), sc["sessions"], sc["concurrency"], sc["file"]))
    out.append("")
    if report.get("interrupted"):
        out += ["**Interrupted**: the table holds what was measured before.", ""]
    out += [".. list-table::", "   :header-rows: 1", ""]
    for r in [HEAD] + rows:
        for i, c in enumerate(r):
            out.append(("   * - " if i == 0 else "     - ") + (rst_escape(c) if c else ""))
    out.append("")
    out += ["- " + rst_escape(t) for t in LEGEND]
    events = ["%s, %s round %d: %s" % (r["server"], r["scenario"], r["round"], ev)
              for r in report["runs"] for ev in r.get("events") or []]
    if events:
        out += ["", "Events:", ""] + ["- " + rst_escape(e) for e in events]
    out.append("")
    return "\n".join(out)


# -------------------------------------------------------------------- main

def parse_args(argv: list[str]) -> argparse.Namespace:
    doc = __doc__ or ""
    parts = doc.split("\n\n")
    ap = argparse.ArgumentParser(usage=parts[1][len("usage: "):], description="\n\n".join(parts[:1] + parts[2:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", action="append", default=[], metavar="SPEC",
                    help="NAME[@PATH][=ARGS], repeatable (default: tftpd-hpa, atftpd, txfbtftp)")
    ap.add_argument("--only", default="", metavar="A,B", help="comma list of scenarios (default: all of tftpbench's)")
    ap.add_argument("--quick", action="store_true", help="smoke test: scenarios at about a tenth of their size")
    ap.add_argument("--repeat", type=int, default=1, metavar="N", help="rounds per scenario (default 1)")
    ap.add_argument("--json", default="", metavar="OUT", help="write everything to this file")
    ap.add_argument("--rst", default="", metavar="OUT", help="write the table as reStructuredText, with the machine")
    ap.add_argument("--from-json", default="", metavar="IN", help="run nothing: print the table of a run saved "
                    "with --json (and write it with --rst, the summary with --json)")
    ap.add_argument("--accounting", choices=("auto", "proc"), default="auto",
                    help="auto: cgroups when possible; proc: force the /proc fallback")
    ap.add_argument("--tools", default="", metavar="DIR", help="directory holding tftpbench and tftpload/ "
                    "(default: $TFTP_TOOLS, else ../shared/tools beside the repository)")
    ap.add_argument("--cache", default=default_cache(), metavar="DIR",
                    help="where atftpd and (if the tools are read-only) tftpload are kept (default: %(default)s)")
    ap.add_argument("--workdir", default="", metavar="DIR", help="root directories and server logs "
                    "(default: a temporary directory, removed at the end unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (server logs)")
    ap.add_argument("--start-timeout", type=float, default=30.0, metavar="S",
                    help="seconds for a server to answer (default 30)")
    ap.add_argument("--stop-timeout", type=float, default=5.0, metavar="S",
                    help="seconds from SIGTERM to SIGKILL (default 5)")
    ap.add_argument("--settle", type=float, default=1.0, metavar="S",
                    help="seconds after a scenario before the server is stopped; the CPU used then is in the "
                    "JSON as server_cpu_settle_s (default 1)")
    ap.add_argument("--pause", type=float, default=1.0, metavar="S", help="seconds between runs (default 1)")
    a = ap.parse_args(argv)
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")
    return a


def interrupt(_sig: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    try:
        if args.from_json:
            return replay(args)
        scs, specs, tftpbench, tftpload = prepare(args)
        return bench(args, argv, scs, specs, tftpbench, tftpload)
    except UsageError as e:
        log(str(e))
        return 2


def replay(args: argparse.Namespace) -> int:
    """The table (and --rst, --json) of a saved run, summarized again by this version of the runner."""
    try:
        with open(args.from_json) as f:
            report = json.load(f)
        scs = [Scenario(n, v["file"], v["sessions"], v["concurrency"], list(v["tftpload_args"]), v["what"])
               for n, v in report["scenarios"].items()]
        specs = [ServerSpec(n, v["kind"], "", list(v.get("args") or [])) for n, v in report["servers"].items()]
    except (OSError, ValueError, KeyError) as e:
        raise UsageError("cannot read %s: %s" % (args.from_json, e)) from None
    finish(report, scs, specs, report["runs"], args)
    return 0


def prepare(args: argparse.Namespace) -> tuple[list[Scenario], list[ServerSpec], ModuleType, str]:
    """Scenarios, resolved servers, tftpbench and tftpload; UsageError if something is missing."""
    tools = find_tools(args.tools)
    tftpbench = load_tftpbench(tools)
    scs = scenarios_from(tftpbench, args.quick)
    only = [s for s in args.only.split(",") if s]
    unknown = [s for s in only if s not in {sc.name for sc in scs}]
    if unknown:
        raise UsageError("unknown scenario(s) %s; known: %s" % (",".join(unknown), ",".join(sc.name for sc in scs)))
    if only:
        scs = [sc for sc in scs if sc.name in only]
    specs = [parse_server(t) for t in (args.server or list(C_PEERS) + ["txfbtftp"])]
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError("server name(s) used twice: %s" % ", ".join(dup))
    tftpload = ensure_tftpload(tools, args.cache)
    resolved = []
    for spec in specs:
        try:
            if spec.kind == "tftpd-hpa":
                resolve_tftpd_hpa(spec)
            elif spec.kind == "atftpd":
                resolve_atftpd(spec, args.cache)
            else:
                resolve_txfbtftp(spec, tempfile.gettempdir())
        except UsageError as e:
            if args.server:  # asked for by name: no silent substitute
                raise
            log("%s; leaving it out" % e)
            continue
        resolved.append(spec)
    if not resolved:
        raise UsageError("no server to benchmark")
    return scs, resolved, tftpbench, tftpload


def write_fixtures(tftpbench: ModuleType, root: str) -> None:
    os.makedirs(root, exist_ok=True)
    tftpbench.fixtures(root)
    with open(os.path.join(root, PROBE), "wb") as f:
        f.write(os.urandom(3000))
    # tftpd-hpa and atftpd drop to unprivileged users: keep it all readable.
    os.chmod(root, 0o755)
    for name in os.listdir(root):
        os.chmod(os.path.join(root, name), 0o644)


def bench(args: argparse.Namespace, argv: list[str], scs: list[Scenario], specs: list[ServerSpec],
          tftpbench: ModuleType, tftpload: str) -> int:
    own_workdir = not args.workdir
    workdir = os.path.abspath(args.workdir) if args.workdir else tempfile.mkdtemp(prefix="txfbtftp-bench-")
    for sub in ("logs", "run"):
        os.makedirs(os.path.join(workdir, sub), exist_ok=True)
    os.chmod(workdir, 0o755)
    with open(os.path.join(os.path.dirname(tftpload), "tftpload.c"), "rb") as f:
        tl_hash = hashlib.sha256(f.read()).hexdigest()[:12]
    report: Json = {"tool": "txfbtftp benchmarks/run.py", "argv": argv, "started": now_iso(),
                    "quick": args.quick, "repeat": args.repeat, "host": HOST,
                    "tftpload": {"path": tftpload, "source_sha256": tl_hash},
                    "tftpbench": tftpbench.__file__, "machine": machine_info(),
                    "accounting": {}, "scenarios": {}, "servers": {}, "runs": [], "interrupted": False}
    runs: list[Json] = report["runs"]
    acct: Accounting | None = None
    runner: Runner | None = None
    failed = False
    try:
        acct = Accounting(args.accounting)
        report["accounting"] = acct.describe()
        log("CPU: %s; memory: %s%s" % (acct.cpu_method, acct.mem_method, "".join("; " + n for n in acct.notes)))
        roots = {s.name: os.path.join(workdir, "root-" + s.name) for s in specs}
        log("writing fixture files in %s" % ", ".join(roots.values()))
        for root in roots.values():
            write_fixtures(tftpbench, root)
        os.sync()  # no writeback of the fixtures during the first runs
        for s in specs:
            report["servers"][s.name] = dict(s.info, kind=s.kind, exe=s.exe, args=s.args, root=roots[s.name],
                                             cmd=s.argv("PORT", "ROOT"))
            log("%s: %s" % (s.name, shlex.join(s.argv("PORT", roots[s.name]))))
        for sc in scs:
            report["scenarios"][sc.name] = {"what": sc.what, "file": sc.file, "sessions": sc.sessions,
                                            "concurrency": sc.concurrency, "tftpload_args": sc.extra}
        runner = Runner(args, tftpload, acct, workdir)
        total, n = len(scs) * args.repeat * len(specs), 0
        for sc in scs:
            for rep in range(1, args.repeat + 1):
                k = (rep - 1) % len(specs)
                for spec in specs[k:] + specs[:k]:
                    n += 1
                    log("[%d/%d] %s round %d: %s" % (n, total, sc.name, rep, spec.name))
                    rec = runner.run_one(spec, sc, rep, roots[spec.name])
                    runs.append(rec)
                    log("    " + one_line(rec))
                    failed = failed or rec["status"] != "ok"
                    time.sleep(args.pause)
    except KeyboardInterrupt:
        report["interrupted"] = True
        log("interrupted; stopping what was started")
    finally:
        if runner is not None:
            runner.cleanup()
        if acct is not None:
            acct.close()
        report["finished"] = now_iso()
        report["machine"]["loadavg_at_end"] = (read_text("/proc/loadavg") or "").strip()
        finish(report, scs, specs, runs, args)
        if own_workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log("work directory (logs, roots) kept: %s" % workdir)
    if report["interrupted"]:
        return 130
    return 1 if failed else 0


def one_line(rec: Json) -> str:
    if rec["status"] == "start-failed" or not rec.get("tftpload"):
        return "%s: %s" % (rec["status"], rec.get("error", ""))
    t = rec["tftpload"]
    return "%d/%d ok, %.2f s, %.1f MB/s, server CPU %.2f s, peak %.1f MiB, other %.2f cores%s" % (
        t["ok"], t["sessions"], t["wall_s"], t["throughput_MBps"], rec["server_cpu_s"], rec["mem_peak_mib"],
        rec.get("other_cores") or 0, "; " + "; ".join(rec["events"]) if rec["events"] else "")


def finish(report: Json, scs: list[Scenario], specs: list[ServerSpec], runs: list[Json],
           args: argparse.Namespace) -> None:
    summary = {sc.name: {s.name: summarize(runs, sc, s) for s in specs} for sc in scs}
    add_ratios(summary, specs)
    report["summary"] = summary
    rows = table_rows(scs, specs, summary)
    if rows:
        print()
        acct = report.get("accounting") or {}
        print("CPU: %s; memory: %s" % (acct.get("cpu", "-"), acct.get("memory", "-")))
        print_table(rows)
        for r in runs:
            for ev in r.get("events") or []:
                print("%s, %s round %d: %s" % (r["server"], r["scenario"], r["round"], ev))
    report["table"] = {"head": HEAD, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        log("wrote %s" % args.json)
    if args.rst and rows:
        write_text(args.rst, render_rst(report, rows))
        log("wrote %s" % args.rst)


if __name__ == "__main__":
    sys.exit(main())
