#!/usr/bin/env python3
"""Download throughput of ``txfbtftp get`` beside curl and atftp, from the same servers in one run.

usage: benchmarks/client.py [--size MiB] [--runs N] [--blksize N] [--windowsize N]

Starts two servers on 127.0.0.1, on free ports in 16000-16999: txfbtftp
(``python -m txfbtftp serve``) and atftpd (the binary ``.ci/run`` unpacks into
``.cache/atftpd``, or one on PATH).  Each serves one random file (64 MiB by
default).  Then every client downloads it from every server ``--runs`` times
(default 3) into a file in the same temporary directory, verified by size:

  txfbtftp   txfbtftp get URL -o OUT -b BLKSIZE -w WINDOWSIZE
  atftp      atftp --get ... --option "blksize BLKSIZE" --option "windowsize WINDOWSIZE"
  curl       curl --tftp-blksize BLKSIZE -o OUT URL   (curl has no windowsize: lock-step)

The figure is the median of the runs' whole wall-clock time (process start
to exit, so Python's start-up, about 0.3 s, counts against txfbtftp), in
MB/s (10^6 bytes per second).  The row "(transfer only)" is what ``txfbtftp
get -v`` reports from its record: request to last block, without start-up.
The machines this runs on are shared and noisy (two cores: a Python client
and a Python server compete for them): compare the columns of one run, not
runs of different days.
"""
import argparse
import datetime
import os
import pathlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import tftpservers  # noqa: E402


def free_port():
    for port in range(16000, 17000):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit("no free UDP port in 16000-16999")


def start_txfbtftp(root):
    port = free_port()
    argv = [sys.executable, "-m", "txfbtftp", "serve", "--backend", "fs:%s" % root, "--port", str(port),
            "--interface", "127.0.0.1", "--stats-interval", "0"]
    return tftpservers.Server("txfbtftp", argv, "127.0.0.1", port, root)


def start_atftpd(root):
    port = free_port()
    argv = [tftpservers.atftpd(), "--daemon", "--no-fork", "--port", str(port), "--bind-address", "127.0.0.1",
            "--user", "root", "--group", "root", "--logfile", "/dev/null", str(root)]
    return tftpservers.Server("atftpd", argv, "127.0.0.1", port, root)


def commands(client, port, out, blksize, windowsize):
    url = "tftp://127.0.0.1:%d/big.bin" % port
    if client == "txfbtftp get":
        return [sys.executable, "-m", "txfbtftp", "get", url, "-o", out, "-b", str(blksize), "-w", str(windowsize),
                "--no-progress", "-v"]
    if client == "atftp":
        return ["atftp", "--get", "-r", "big.bin", "-l", out, "--option", "blksize %d" % blksize,
                "--option", "windowsize %d" % windowsize, "127.0.0.1", str(port)]
    return ["curl", "-q", "-sS", "--tftp-blksize", str(blksize), "-o", out, url]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64, help="file size in MiB (default 64)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--blksize", type=int, default=1468)
    parser.add_argument("--windowsize", type=int, default=16)
    args = parser.parse_args()
    clients = ["txfbtftp get", "atftp", "curl"]
    rows = ["txfbtftp get", "(transfer only)", "atftp", "curl"]
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp) / "root"
        root.mkdir()
        size = args.size << 20
        with open(root / "big.bin", "wb") as f:
            for _ in range(args.size):
                f.write(os.urandom(1 << 20))
        servers = [start_txfbtftp(root), start_atftpd(root)]
        table = {}
        try:
            for server in servers:
                for client in clients:
                    if shutil.which(commands(client, 0, "x", 1, 1)[0]) is None and client != "txfbtftp get":
                        continue
                    times, own = [], []
                    for _ in range(args.runs):
                        out = os.path.join(tmp, "out.bin")
                        argv = commands(client, server.port, out, args.blksize, args.windowsize)
                        began = time.monotonic()
                        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=600)
                        took = time.monotonic() - began
                        ok = done.returncode == 0 and os.path.getsize(out) == size
                        os.unlink(out)
                        if not ok:
                            print("%s from %s failed: %s" % (client, server.name, done.stderr[-300:]),
                                  file=sys.stderr)
                            continue
                        times.append(took)
                        if client == "txfbtftp get":
                            own.append(float(done.stderr.split(b"bytes in ")[1].split(b" s")[0]))
                    if times:
                        table[server.name, client] = size / statistics.median(times) / 1e6
                    if own:
                        table[server.name, "(transfer only)"] = size / statistics.median(own) / 1e6
        finally:
            for server in servers:
                server.stop()
    print("%s, %d MiB, blksize %d, windowsize %d (curl: lock-step), median of %d, MB/s:"
          % (datetime.date.today().isoformat(), args.size, args.blksize, args.windowsize, args.runs))
    print("%-16s %10s %10s" % ("client", "txfbtftp", "atftpd"))
    for client in rows:
        print("%-16s %10s %10s" % (client, *("%.1f" % table[s, client] if (s, client) in table else "-"
                                             for s in ("txfbtftp", "atftpd"))))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
