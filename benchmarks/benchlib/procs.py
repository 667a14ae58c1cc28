"""What /proc tells: the accounting fallback where cgroups cannot be used, the sampling of memory over a
run, and the machine's own figures (its noise during a run, and what it was, for the report)."""
from __future__ import annotations

import os
import platform
import resource
import signal
import socket
import threading
from collections.abc import Callable

from benchlib.common import CLK_TCK, Json, read_text

SAMPLE_S = 0.1
PAGE = os.sysconf("SC_PAGE_SIZE")


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
