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
import hashlib
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from types import ModuleType
from typing import Any

from benchlib.cgroups import Accounting
from benchlib.common import C_PEERS, HOST, PROBE, Json, UsageError, log, now_iso, read_text, write_text
from benchlib.procs import machine_info
from benchlib.report import HEAD, add_ratios, print_table, render_rst, summarize, table_rows
from benchlib.runner import Runner
from benchlib.servers import ServerSpec, parse_server, resolve_atftpd, resolve_tftpd_hpa, resolve_txfbtftp
from benchlib.tools import Scenario, default_cache, ensure_tftpload, find_tools, load_tftpbench, scenarios_from


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
