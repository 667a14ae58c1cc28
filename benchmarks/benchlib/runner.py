"""Running one scenario against one server: start it afresh on a free port, make sure it is the one
answering, run tftpload and measure around it, and clean up whatever happens."""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import signal
import socket
import subprocess
import time
from typing import Any
from collections.abc import Callable

from benchlib.cgroups import Accounting, Group
from benchlib.common import HOST, PORTS, PROBE, Json, now_iso, read_text, sig_name, tail
from benchlib.procs import Sampler, cpu_times
from benchlib.servers import ServerSpec
from benchlib.tools import Scenario

GiB = float(1 << 30)
MiB = float(1 << 20)
# The wrapper every server starts through: optional soft RLIMIT_NOFILE, then
# its own pid into each cgroup.procs given, then exec the server.
WRAP = ('[ "$1" = - ] || ulimit -S -n "$1" || exit 125; shift; '
        'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"')


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
                    self.settle()
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

    def settle(self, most: float = 5.0) -> None:
        """Wait until the server is idle (``most`` seconds at most): one
        process answering the probe does not mean its others have started,
        and their start-up would be billed to the first load."""
        group = self.group
        if group is None:
            return
        deadline = time.monotonic() + most
        last = group.cpu()["cpu_s"]
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = group.cpu()["cpu_s"]
            if now - last < 0.005:
                return
            last = now

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
