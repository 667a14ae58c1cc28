"""From runs to results: medians per scenario and server, ratios against the best C peer, and the table
as text and reStructuredText; the same for a live run and a --from-json replay."""
from __future__ import annotations

import shlex
import statistics
import sys
from typing import Any

from benchlib.common import Json
from benchlib.servers import ServerSpec
from benchlib.tools import Scenario


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
