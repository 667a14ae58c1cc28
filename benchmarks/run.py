#!/usr/bin/env python3
"""Benchmark txfbtftp against tftpd-hpa with the shared tftpbench load scenarios.

usage: benchmarks/run.py [--servers txfbtftp,tftpd-hpa] [--only a,b,...]
                         [--root DIR] [--json OUT.json]
                         [--txfbtftp-args="ARGS"] [--start-timeout S]

For each server (default: txfbtftp, plus tftpd-hpa when in.tftpd is on PATH)
the runner starts it in the foreground on a free loopback port serving one root
directory, waits until it answers a small RRQ, runs every selected scenario of
tftpbench (../shared/tools beside the repository, or $TFTP_TOOLS) against it (one tftpbench call per scenario; a
server that dies is noted and restarted for the next scenario), then stops it
(SIGTERM to its process group, SIGKILL after 5 s), also on errors and Ctrl-C.

While storm-2000 runs, a thread samples the server's memory every 100 ms: the
sum of VmRSS over the server process and all its descendants (tftpd-hpa forks
one child per transfer). Its peak is reported. Summed RSS counts shared pages
(libc, the page cache of mmapped files) once per process, so for a forking
server it overstates the memory really in use; the peak sum of RssAnon is
reported too, and the JSON has the peak process count and the whole series.
One sample costs about 15 ms of CPU with ~1800 tftpd-hpa processes (one read
of /proc/PID/statm each) and well under 1 ms for a single-process server, so
the sampler itself takes some CPU from a forking server during the storm.

Servers:
  txfbtftp   python -m twisted tftp --backend fs:ROOT --port P
             --interface 127.0.0.1 [--txfbtftp-args, shlex-split]
             (python is this interpreter, or the repository's .venv/bin/python
             if only that one can import twisted and txfbtftp)
  tftpd-hpa  in.tftpd -L -a 127.0.0.1:P -s ROOT

The table has one row per scenario and one column per server with the key
figure: MB/s (10^6 bytes/s) for single-* and fleet-*, ok/total and wall seconds
for storm-2000, wall seconds for wan-* and lossy-*; storm-2000 adds rows for
peak memory. The ratio column compares txfbtftp with tftpd-hpa so that >1 always
means txfbtftp is better: txfbtftp/tftpd-hpa for MB/s, tftpd-hpa/txfbtftp for
seconds and RSS. A figure marked '*' comes from a run with failed sessions,
one marked '~' from a server that did not negotiate the requested windowsize.
The storm-2000 rows give peak summed RSS and, fairer to a forking server,
peak summed RssAnon (RSS less file-backed and shared-memory pages).

--root DIR serves DIR (made world-readable: tftpd-hpa drops to user tftp) and
leaves the fixture files (66 MiB) there; without it a temporary directory is
used and removed. --json OUT writes everything, including each server's raw
tftpbench JSON. Pass --txfbtftp-args with '=' when it starts with a dash:
--txfbtftp-args="--verbose".

Exit status: 0; 2 on bad usage; 1 if a server could not be started or died during the run
(it is restarted for the next scenario); 130 if interrupted (the table of what
was measured is still printed and the JSON written).

Examples:
  benchmarks/run.py --only single-1468,fleet-1468
  benchmarks/run.py --servers tftpd-hpa --only storm-2000 --json /tmp/b.json
"""
import argparse
import datetime
import importlib.machinery
import importlib.util
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.environ.get("TFTP_TOOLS") or next(
    (d for d in (os.path.join(os.path.dirname(REPO), "shared", "tools"), "/work/shared/tools")
     if os.path.isfile(os.path.join(d, "tftpbench"))), "/work/shared/tools")
TFTPBENCH = os.path.join(TOOLS, "tftpbench")
LOADDIR = os.path.join(TOOLS, "tftpload")
TFTPLOAD = os.path.join(LOADDIR, "tftpload")
HOST = "127.0.0.1"
PROBE = "runpy-probe.bin"
STORM = "storm-2000"
SAMPLE_S = 0.1
SERVER_NAMES = ("txfbtftp", "tftpd-hpa")
REF, CAND = "tftpd-hpa", "txfbtftp"

# Used only if tftpbench cannot be imported to read its own list.
FALLBACK_SCENARIOS = ["single-1468", "single-8192", "single-w16", "fleet-1468", "fleet-w16",
                      "storm-2000", "wan-20ms", "wan-20ms-w16", "lossy-2pct"]


def log(msg):
    print("run.py: " + msg, file=sys.stderr, flush=True)


def die(msg):
    log(msg)
    sys.exit(2)


def load_tftpbench():
    """tftpbench as a module (it has no .py suffix), or None."""
    try:
        loader = importlib.machinery.SourceFileLoader("tftpbench", TFTPBENCH)
        spec = importlib.util.spec_from_loader("tftpbench", loader)
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
        return mod
    except Exception as e:  # noqa: BLE001 - fall back to the known list
        log("cannot import %s (%s); using the built-in scenario list" % (TFTPBENCH, e))
        return None


def metric_kind(name):
    if name.startswith("storm"):
        return "storm"
    if name.startswith(("wan", "lossy")):
        return "seconds"
    return "MBps"


# ---------------------------------------------------------------- processes

def free_port():
    """A free UDP port on loopback below the ephemeral range."""
    for _ in range(200):
        port = random.randint(10000, 32000)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((HOST, port))
        except OSError:
            continue
        finally:
            s.close()
        return port
    raise RuntimeError("no free UDP port found")


def kill_group(proc, grace=5.0):
    """SIGTERM the process group led by proc, SIGKILL what is left; reap proc."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    finally:
        # Also kills children that outlive the leader (tftpd-hpa sessions).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def read_proc(pid, name):
    """Contents of /proc/PID/NAME, or b"" if the process is gone."""
    try:
        fd = os.open("/proc/%d/%s" % (pid, name), os.O_RDONLY)
    except OSError:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""
    finally:
        os.close(fd)


PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class MemSampler(threading.Thread):
    """Samples the summed RSS of a process tree every SAMPLE_S seconds.

    The tree is the root pid, its descendants by ppid (from /proc/*/stat) and
    anything else still in its session. RSS comes from /proc/PID/statm:
    'resident' there is the same counter as VmRSS in /proc/PID/status, and
    resident - shared is RssAnon; statm is the cheaper file to read. Each pid's
    (ppid, session) is read once and kept while the pid stays in /proc (a pid
    cannot be reused between two listings 100 ms apart), so one sample costs a
    listing of /proc plus one small read per process of the tree.
    """

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.stop_evt = threading.Event()
        self.samples = []  # (t, rss_kb, anon_kb, nprocs)
        self.info = {}  # pid -> (ppid, session)
        self.cpu = 0.0
        self.wall = 0.0
        self.n = 0

    def family(self):
        info = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            pid = int(d)
            v = self.info.get(pid)
            if v is None:
                s = read_proc(pid, "stat")
                if not s:
                    continue
                rest = s[s.rfind(b")") + 2:].split()
                v = (int(rest[1]), int(rest[3]))
            info[pid] = v
        self.info = info
        kids = {}
        for pid, (ppid, _) in info.items():
            kids.setdefault(ppid, []).append(pid)
        found, todo = set(), [self.pid]
        while todo:
            p = todo.pop()
            if p not in found:
                found.add(p)
                todo.extend(kids.get(p, ()))
        found.update(pid for pid, (_, sid) in info.items() if sid == self.pid)
        return found

    def sample(self):
        c0, t0 = time.thread_time(), time.monotonic()
        rss = anon = n = 0
        for pid in self.family():
            f = read_proc(pid, "statm").split()
            if len(f) >= 3 and f[1] != b"0":  # zombies have no memory
                rss += int(f[1])
                anon += int(f[1]) - int(f[2])
                n += 1
        self.cpu += time.thread_time() - c0
        self.wall += time.monotonic() - t0
        self.n += 1
        return rss * PAGE_KB, anon * PAGE_KB, n

    def run(self):
        t_start = time.monotonic()
        nxt = t_start
        while not self.stop_evt.is_set():
            rss, anon, n = self.sample()
            self.samples.append((round(time.monotonic() - t_start, 3), rss, anon, n))
            nxt += SAMPLE_S
            delay = nxt - time.monotonic()
            if delay < 0:  # sampling took longer than the interval
                nxt = time.monotonic()
                delay = 0
            self.stop_evt.wait(delay)

    def stop(self):
        self.stop_evt.set()
        self.join()

    def summary(self, baseline):
        s = self.samples
        if not s:
            return {"samples": 0}
        peak = max(s, key=lambda x: x[1])
        return {
            "interval_s": SAMPLE_S,
            "samples": len(s),
            "sampler_cpu_ms_per_sample": round(1000 * self.cpu / self.n, 2),
            "sampler_wall_ms_per_sample": round(1000 * self.wall / self.n, 2),
            "baseline_rss_kb": baseline[0], "baseline_anon_kb": baseline[1],
            "baseline_procs": baseline[2],
            "peak_rss_kb": peak[1], "peak_rss_at_s": peak[0],
            "peak_anon_kb": max(x[2] for x in s),
            "peak_procs": max(x[3] for x in s),
            "series": [list(x) for x in s],  # [t_s, rss_kb, anon_kb, procs]
        }


# ------------------------------------------------------------------ servers

class Server:
    def __init__(self, name, argv_fn, root, logdir, start_timeout):
        self.name = name
        self.argv_fn = argv_fn
        self.root = root
        self.logpath = os.path.join(logdir, name + ".log")
        self.start_timeout = start_timeout
        self.proc = None
        self.port = None
        self.argv = None
        self.starts = 0

    def start(self):
        last = ""
        for _attempt in range(3):
            self.port = free_port()
            self.argv = self.argv_fn(self.port, self.root)
            self.starts += 1
            with open(self.logpath, "ab") as logf:
                logf.write(("\n==== start %d: %s\n" % (self.starts, shlex.join(self.argv))).encode())
                logf.flush()
                # cwd outside the repository: its twisted/plugins folder would
                # otherwise shadow an installed Twisted for "python -m twisted".
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             cwd=os.path.dirname(self.logpath))
            ok, last = self.wait_ready()
            if ok:
                return
            self.stop()
        raise RuntimeError("%s did not answer on 127.0.0.1 after %d tries (last: %s); its output:\n%s"
                           % (self.name, self.starts, last, self.log_tail()))

    def wait_ready(self):
        deadline = time.monotonic() + self.start_timeout
        last = "no reply"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False, "exited with status %s" % self.proc.returncode
            p = subprocess.run([TFTPLOAD, "--host", HOST, "--port", str(self.port), "--file", PROBE,
                                "--verify", os.path.join(self.root, PROBE), "--timeout-ms", "250",
                                "--retries", "1", "--max-seconds", "2", "--json", "--quiet"],
                               capture_output=True, text=True)
            try:
                d = json.loads(p.stdout)
                if d.get("ok") == 1:
                    return True, ""
                errs = d.get("server_errors") or []
                last = ("server error: %s" % errs[0].get("message")) if errs else \
                       "; ".join("%s: %s" % kv for kv in (d.get("failure_messages") or {}).items()) or "no reply"
            except ValueError:
                last = "tftpload: " + (p.stderr or p.stdout)[-200:]
            time.sleep(0.2)
        return False, last

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        kill_group(self.proc)

    def log_tail(self, n=3000):
        try:
            with open(self.logpath, "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - n))
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def txfbtftp_python():
    """sys.executable, or the repository's .venv python when only that has Twisted."""
    venv = os.path.join(REPO, ".venv", "bin", "python")
    for py in (sys.executable, venv):
        if os.access(py, os.X_OK) and subprocess.run(
                [py, "-c", "import twisted.internet, txfbtftp"], cwd=tempfile.gettempdir(),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            if py != sys.executable:
                log("%s cannot import twisted and txfbtftp; using %s" % (sys.executable, py))
            return py
    return sys.executable  # fails at start, with its own message in the log


def server_argv_fns(args):
    py = []

    def txfbtftp(port, root):
        if args.txfbtftp_cmd:
            return [w.format(port=port, root=root) for w in shlex.split(args.txfbtftp_cmd)]
        if not py:
            py.append(txfbtftp_python())
        return [py[0], "-m", "twisted", "tftp", "--backend", "fs:" + root,
                "--port", str(port), "--interface", HOST] + shlex.split(args.txfbtftp_args)

    def tftpd_hpa(port, root):
        return [in_tftpd(), "-L", "-a", "%s:%d" % (HOST, port), "-s", root]

    return {"txfbtftp": txfbtftp, "tftpd-hpa": tftpd_hpa}


def in_tftpd():
    return shutil.which("in.tftpd") or shutil.which("in.tftpd", path="/usr/sbin:/sbin")


# -------------------------------------------------------------------- bench

def run_tftpbench(port, root, scenario, out_json):
    """One tftpbench call for one scenario; returns its result dict."""
    cmd = [sys.executable, TFTPBENCH, "--host", HOST, "--port", str(port), "--root", root,
           "--only", scenario, "--json", out_json]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate()
    except BaseException:
        kill_group(proc, grace=2.0)
        raise
    for line in out.splitlines():
        if line.strip() and not line.startswith("scenario "):
            print("    " + line, flush=True)
    try:
        with open(out_json) as f:
            return json.load(f).get(scenario) or {"error": "no result in tftpbench JSON"}
    except (OSError, ValueError):
        return {"error": "tftpbench exited %s: %s" % (proc.returncode, out[-500:])}


def bench_server(srv, scenarios, rec, workdir):
    results = rec["results"]
    try:
        srv.start()
        rec["cmd"] = srv.argv
        log("%s up on 127.0.0.1:%d (pid %d)" % (srv.name, srv.port, srv.proc.pid))
        reported = False
        for sc in scenarios:
            if not srv.alive():
                if not reported:
                    rec["events"].append("server exited (status %s) before %s" % (srv.proc.returncode, sc))
                log("%s exited (status %s); restarting it" % (srv.name, srv.proc.returncode))
                rec["died"] = True
                srv.start()
                rec["events"].append("restarted it before %s" % sc)
            reported = False
            out_json = os.path.join(workdir, "%s-%s.json" % (srv.name, sc))
            sampler = None
            if sc == STORM:
                fam = MemSampler(srv.proc.pid)
                baseline = fam.sample()
                sampler = fam
                sampler.start()
            try:
                results[sc] = run_tftpbench(srv.port, srv.root, sc, out_json)
            finally:
                if sampler:
                    sampler.stop()
                    rec["storm_memory"] = sampler.summary(baseline)
            if not srv.alive():
                rec["events"].append("server exited (status %s) during %s" % (srv.proc.returncode, sc))
                rec["died"] = reported = True
    except (RuntimeError, OSError) as e:
        rec["events"].append("not benchmarked further: " + str(e).splitlines()[0])
        rec["failed_to_run"] = True
        log(str(e))
    finally:
        srv.stop()
        rec["log_tail"] = srv.log_tail()


# -------------------------------------------------------------------- table

def fmt_cell(kind, d):
    """(text, comparable value or None) for one scenario result."""
    if not d:
        return "-", None
    if "error" in d:
        return "error", None
    bad = "*" if d.get("failed") or d.get("not_started") else ""
    if d.get("windowsize_req") and (d.get("negotiated") or {}).get("windowsize_max", 1) <= 1:
        bad += "~"
    if kind == "MBps":
        return "%.1f%s" % (d["throughput_MBps"], bad), d["throughput_MBps"]
    if kind == "storm":
        return "%d/%d %.2fs%s" % (d["ok"], d["sessions"], d["wall_s"], bad), d["wall_s"]
    return "%.2fs%s" % (d["wall_s"], bad), d["wall_s"]


def ratio(kind, cand, ref):
    if cand is None or ref is None:
        return "-"
    if kind == "MBps":
        return "%.2f" % (cand / ref) if ref else "-"
    return "%.2f" % (ref / cand) if cand else "-"


def build_table(scenarios, servers, recs):
    has_ratio = CAND in servers and REF in servers
    head = ["scenario", "figure"] + list(servers) + (["ratio"] if has_ratio else [])
    rows = []
    for sc in scenarios:
        kind = metric_kind(sc)
        label = {"MBps": "MB/s", "storm": "ok, wall s", "seconds": "wall s"}[kind]
        cells, vals = [], {}
        for s in servers:
            text, v = fmt_cell(kind, recs[s]["results"].get(sc))
            cells.append(text)
            vals[s] = v
        row = [sc, label] + cells
        if has_ratio:
            row.append(ratio(kind, vals[CAND], vals[REF]))
        rows.append(row)
        if sc == STORM:
            for key, label in (("peak_rss_kb", "peak RSS MiB"), ("peak_anon_kb", "peak RssAnon MiB")):
                cells, vals = [], {}
                for s in servers:
                    v = (recs[s].get("storm_memory") or {}).get(key)
                    vals[s] = v / 1024 if v else None
                    cells.append("%.1f" % vals[s] if v else "-")
                row = [sc, label] + cells
                if has_ratio:
                    row.append(ratio("rss", vals[CAND], vals[REF]))
                rows.append(row)
    return head, rows


def print_table(head, rows, has_ratio, out=sys.stdout):
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]

    def line(r):
        return "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    if has_ratio:
        print("ratio >1 means txfbtftp is better: txfbtftp/tftpd-hpa for MB/s, "
              "tftpd-hpa/txfbtftp for seconds and RSS", file=out)
    print(line(head), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print(line(r), file=out)
    if any("*" in c for r in rows for c in r[2:]):
        print("* some sessions failed in that run; see the JSON / tftpbench output", file=out)
    if any("~" in c for r in rows for c in r[2:]):
        print("~ windowsize requested but not negotiated: that server ran lock-step", file=out)


# --------------------------------------------------------------------- main

def parse_args(argv):
    # Let "--txfbtftp-args --foo" work like "--txfbtftp-args=--foo".
    fixed, i = [], 0
    while i < len(argv):
        if argv[i] in ("--txfbtftp-args", "--txfbtftp-cmd") and i + 1 < len(argv):
            fixed.append(argv[i] + "=" + argv[i + 1])
            i += 2
        else:
            fixed.append(argv[i])
            i += 1
    parts = __doc__.split("\n\n")
    ap = argparse.ArgumentParser(usage=parts[1][len("usage: "):],
                                 description="\n\n".join(parts[:1] + parts[2:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="", help="comma list of %s (default: both, "
                    "tftpd-hpa only when in.tftpd is on PATH)" % ",".join(SERVER_NAMES))
    ap.add_argument("--only", default="", help="comma list of tftpbench scenarios (default: all)")
    ap.add_argument("--root", default="", help="directory to serve (default: a temporary one)")
    ap.add_argument("--json", default="", help="write all results to this file")
    ap.add_argument("--txfbtftp-args", default="", help="extra arguments for txfbtftp (shlex-split)")
    ap.add_argument("--start-timeout", type=float, default=30.0,
                    help="seconds to wait for a server to answer (default 30)")
    ap.add_argument("--txfbtftp-cmd", default="", help=argparse.SUPPRESS)
    return ap.parse_args(fixed)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    # SIGTERM to the runner behaves like Ctrl-C, so cleanup runs.
    def on_term(_sig, _frm):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    bench = load_tftpbench()
    all_sc = list(bench.SCENARIOS) if bench else FALLBACK_SCENARIOS
    only = [s for s in args.only.split(",") if s]
    unknown = [s for s in only if s not in all_sc]
    if unknown:
        die("unknown scenario(s) %s; known: %s" % (",".join(unknown), ",".join(all_sc)))
    scenarios = [s for s in all_sc if not only or s in only]

    if args.servers:
        servers = [s for s in args.servers.split(",") if s]
        bad = [s for s in servers if s not in SERVER_NAMES]
        if bad:
            die("unknown server(s) %s; known: %s" % (",".join(bad), ",".join(SERVER_NAMES)))
    else:
        servers = ["txfbtftp"] + (["tftpd-hpa"] if in_tftpd() else [])
    if "tftpd-hpa" in servers and not in_tftpd():
        die("in.tftpd not found (apt-get install tftpd-hpa)")

    if not os.access(TFTPLOAD, os.X_OK):
        log("building tftpload")
        subprocess.run(["make", "-s", "-C", LOADDIR], check=True)

    workdir = tempfile.mkdtemp(prefix="txfbtftp-bench-")
    own_root = not args.root
    root = os.path.abspath(args.root) if args.root else os.path.join(workdir, "root")
    os.makedirs(root, exist_ok=True)
    report = {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": HOST, "root": root, "tftpbench": TFTPBENCH, "scenarios": scenarios,
        "servers": {}, "interrupted": False,
    }
    recs = report["servers"]
    try:
        # tftpd-hpa chroots into root and reads as user tftp: keep it readable.
        os.chmod(root, 0o755)
        with open(os.path.join(root, PROBE), "wb") as f:
            f.write(os.urandom(3000))
        if bench:
            log("writing fixtures in %s" % root)
            bench.fixtures(root)
        for name in os.listdir(root):
            p = os.path.join(root, name)
            if os.path.isfile(p):
                os.chmod(p, os.stat(p).st_mode | 0o444)

        fns = server_argv_fns(args)
        for name in servers:
            recs[name] = {"cmd": None, "results": {}, "events": []}
            log("== %s" % name)
            srv = Server(name, fns[name], root, workdir, args.start_timeout)
            bench_server(srv, scenarios, recs[name], workdir)
    except KeyboardInterrupt:
        report["interrupted"] = True
        log("interrupted; servers stopped")
    finally:
        report["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        done = [s for s in servers if s in recs]
        if done:
            head, rows = build_table(scenarios, done, recs)
            report["table"] = {"head": head, "rows": rows}
            print()
            print_table(head, rows, CAND in done and REF in done)
            for s in done:
                for ev in recs[s]["events"]:
                    print("%s: %s" % (s, ev))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(report, fh, indent=1)
            log("wrote %s" % args.json)
        shutil.rmtree(workdir, ignore_errors=True)  # holds the root unless --root
        if not own_root:
            try:
                os.unlink(os.path.join(root, PROBE))
            except OSError:
                pass
    if report["interrupted"]:
        return 130
    return 1 if any(r.get("failed_to_run") or r.get("died") for r in recs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
