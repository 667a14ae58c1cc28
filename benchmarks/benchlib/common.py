"""What every part of the runner shares: its messages, exit-2 errors, small file and command helpers,
and the address and names a run is built around."""
from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
from typing import Any
from collections.abc import Sequence

# the repository: benchmarks/benchlib/common.py is three levels below it
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST = "127.0.0.1"
PORTS = (17000, 17999)
C_PEERS = ("tftpd-hpa", "atftpd")
PROBE = "probe.bin"
CLK_TCK = os.sysconf("SC_CLK_TCK")

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
