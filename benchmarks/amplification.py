"""What a TFTP server sends to an address that never answers, next to tftpd-hpa and atftpd.

Needs root (two network namespaces and a veth pair, tests/namespaces.py).
Every server runs at once in the server namespace with its default
retransmission schedule; tests/reflector.py, in the client namespace, runs
every case against every server at once, each from its own address, and
listens for SECONDS (default 70).  Prints an RST table of amplification:
bytes received over bytes sent, IP and UDP headers included.

    sudo python3 benchmarks/amplification.py [--seconds 70] [--before PATH] [--json OUT]

``--before PATH`` adds the txfbtftp in PATH (a checkout with a .venv).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.namespaces import in_ns, pair  # noqa: E402

SERVER = "10.79.0.1"
CASES = ("plain", "options", "burst", "spoofed-ack", "junk")
ATFTPD = os.path.expanduser("~/.cache/txfbtftp-bench/atftpd/root/usr/sbin/atftpd")


def servers(root, before):
    venv = os.path.join(REPO, ".venv", "bin", "twistd")
    ours = [venv, "-n", "--pidfile=", "tftp", "--backend", "fs:" + root, "--interface", SERVER, "--stats-interval",
            "0", "--port"]
    out = {"tftpd-hpa": ["in.tftpd", "-L", "-a", SERVER + ":6901", "-s", root]}
    if os.access(ATFTPD, os.X_OK):
        out["atftpd"] = [ATFTPD, "--daemon", "--no-fork", "--logfile", "/dev/null", "--port", "6902",
                         "--bind-address", SERVER, root]
    out["txfbtftp"] = ours + ["6903"]
    out["txfbtftp --single-port"] = ours + ["6904", "--single-port"]
    if before:
        old = [os.path.join(before, ".venv", "bin", "twistd")] + ours[1:]
        out["before"] = old + ["6905"]
        out["before --single-port"] = old + ["6906", "--single-port"]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=70.0)
    p.add_argument("--before")
    p.add_argument("--json")
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("amplification.py needs root (network namespaces)")
    root = tempfile.mkdtemp(prefix="amp-root.")
    os.chmod(root, 0o755)
    with open(os.path.join(root, "pxelinux.0"), "wb") as f:
        f.write(os.urandom(100_000))
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.write(os.urandom(4 << 20))
    for name in os.listdir(root):
        os.chmod(os.path.join(root, name), 0o644)
    table = servers(root, args.before)
    sources = ["10.79.0.%d" % (10 + i) for i in range(len(table) * len(CASES))]
    procs, probes = [], {}
    try:
        with pair("a", [SERVER], sources) as (server_ns, client_ns):
            for argv in table.values():
                procs.append(subprocess.Popen(in_ns(server_ns, *argv), stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, cwd=REPO))
            time.sleep(3)
            for i, (name, argv) in enumerate(table.items()):
                port = next(a.rsplit(":", 1)[1] for a in argv if a.startswith(SERVER + ":")) \
                    if name == "tftpd-hpa" else argv[argv.index("--port") + 1]
                mine = sources[i * len(CASES):(i + 1) * len(CASES)]
                probes[name] = subprocess.Popen(
                    in_ns(client_ns, sys.executable, os.path.join(REPO, "tests", "reflector.py"), SERVER, port,
                          args.seconds, *("%s@%s" % c for c in zip(CASES, mine, strict=True))),
                    stdout=subprocess.PIPE, text=True)
            results = {name: {r["case"]: r for r in map(json.loads, pr.communicate()[0].splitlines())}
                       for name, pr in probes.items()}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)
    names = list(results)
    width = max(len(n) for n in names) + 2
    rule = "=" * 12 + "  " + "  ".join("=" * width for _ in names)
    print(rule)
    print("case".ljust(12) + "  " + "  ".join(n.ljust(width) for n in names))
    print(rule)
    for case in CASES:
        print(case.ljust(12) + "  " + "  ".join(
            ("%.2fx (%d)" % (results[n][case]["ratio"], len(results[n][case]["replies"]))).ljust(width)
            for n in names))
    print(rule)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": args.seconds, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
