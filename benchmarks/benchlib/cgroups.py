"""Accounting by cgroup: one group per server start, so its CPU and memory count every process, thread
and page it causes (each once), and nothing it started outlives the run, not even a SIGKILLed runner's."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from benchlib.common import CLK_TCK, Json, log, read_text, write_text
from benchlib.procs import ProcTree, session_pids

CG_PREFIX = "txfbtftp-bench."


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
