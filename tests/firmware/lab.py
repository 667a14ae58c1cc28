"""A boot lab: one network namespace holding a tap device, txfbtftp, dnsmasq
(DHCP only) and a packet capture, with QEMU booting a firmware through the
tap.

Everything runs as separate programs: txfbtftp only through ``twistd tftp``
(its command line), never imported.  The namespace name carries the pid and a
counter, so parallel runs and the other network tests never collide; the
namespace, the tap and every process started here are removed in
:meth:`Lab.close`, whatever happened before.

Addresses (inside the namespace only)::

    tap0   10.79.0.1/24   FIRST: the primary address (DHCP answers from it)
           10.79.0.2/24   SECOND: multi-homed only; DHCP names it as the
                          TFTP server, so every TFTP reply must come from it
           fd79::1/64     router advertisements only (see below)
    guest  10.79.0.100    fixed by dnsmasq for the guest's MAC

dnsmasq also sends IPv6 router advertisements: iPXE configures IPv4 and IPv6
together and, with no router on the link, waits about 13 s for one before
it goes on with its IPv4 lease.

Single-homed, the server listens on FIRST alone and DHCP names FIRST.
Multi-homed, it listens on ``::`` (one dual-stack wildcard socket) and DHCP
names SECOND; the kernel's own choice of source for a reply to the guest
would be FIRST, so a reply from the wrong address shows in the capture.

When something fails, :meth:`Lab.report` gathers what is needed to see why:
the serial console's tail, a summary of the captured packets, the server's
session log and dnsmasq's log.
"""
import collections
import itertools
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time

SUBNET = "10.79.0"
FIRST, SECOND = SUBNET + ".1", SUBNET + ".2"
CLIENT = SUBNET + ".100"
MAC = "52:54:00:4f:00:64"
TAP = "tap0"
RA_PREFIX = "fd79::"
TFTP_PORT = 69

HERE = os.path.dirname(os.path.abspath(__file__))
_serial = itertools.count(1)

ANSI = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>78cDEHM])")


class LabError(Exception):
    """The lab itself could not be set up (not the firmware's fault)."""


def run(*argv, timeout=30, check=True):
    res = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise LabError("%s: exit %d: %s" % (" ".join(map(str, argv)), res.returncode,
                                            (res.stderr or res.stdout).strip()))
    return res


def stop_process(proc, grace):
    """Terminate ``proc`` if it still runs; kill it after ``grace`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tail(text, lines):
    parts = text.splitlines()
    if len(parts) > lines:
        return "[... %d lines before ...]\n" % (len(parts) - lines) + "\n".join(parts[-lines:])
    return "\n".join(parts)


# --------------------------------------------------------------------------
# Packets: a pcap reader and a TFTP-aware description of each datagram
# --------------------------------------------------------------------------

OPCODES = {1: "RRQ", 2: "WRQ", 3: "DATA", 4: "ACK", 5: "ERROR", 6: "OACK"}


class Packet(collections.namedtuple("Packet", "time src sport dst dport length payload")):
    """One captured UDP datagram over IPv4 (``payload`` may be cut short by
    the capture's snap length; ``length`` is the UDP payload's real size)."""

    @property
    def opcode(self):
        if len(self.payload) < 2 or 67 in (self.sport, self.dport) or 68 in (self.sport, self.dport):
            return None
        return struct.unpack("!H", self.payload[:2])[0]

    @property
    def kind(self):
        if 67 in (self.sport, self.dport):
            return "DHCP"
        return OPCODES.get(self.opcode, "UDP")

    @property
    def block(self):
        if self.kind in ("DATA", "ACK") and len(self.payload) >= 4:
            return struct.unpack("!H", self.payload[2:4])[0]
        return None

    def fields(self):
        """RRQ/WRQ: [filename, mode, opt, val, ...]; OACK: [opt, val, ...]."""
        body = self.payload[2:] if self.kind in ("RRQ", "WRQ", "OACK") else b""
        return [f.decode("latin-1") for f in body.split(b"\0")[:-1]]

    def options(self):
        f = self.fields()
        if self.kind in ("RRQ", "WRQ"):
            f = f[2:]
        return {f[i].lower(): f[i + 1] for i in range(0, len(f) - 1, 2)}

    @property
    def error(self):
        if self.kind != "ERROR" or len(self.payload) < 4:
            return None
        return struct.unpack("!H", self.payload[2:4])[0], self.payload[4:].split(b"\0")[0].decode("latin-1")

    def describe(self):
        what = self.kind
        if what in ("RRQ", "WRQ"):
            f = self.fields()
            what += " %r %s" % (f[0] if f else "", " ".join(f[1:]))
        elif what == "OACK":
            what += " " + " ".join(self.fields())
        elif what in ("DATA", "ACK"):
            what += " %d" % self.block
            if what.startswith("DATA"):
                what += " (%d bytes)" % (self.length - 4)
        elif what == "ERROR":
            what += " %s %r" % self.error if self.error else ""
        return "%9.3f %s:%d > %s:%d %s" % (self.time, self.src, self.sport, self.dst, self.dport, what)


def read_pcap(path):
    """The UDP/IPv4 datagrams of a pcap file (Ethernet link type)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        raise LabError("%s is not a pcap file" % path)
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    packets, off, t0 = [], 24, None
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(end + "IIII", data[off:off + 16])
        off += 16
        frame = data[off:off + incl]
        off += incl
        t = sec + frac / (1e9 if nano else 1e6)
        t0 = t if t0 is None else t0
        if len(frame) < 34 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 15) * 4
        if ip[9] != 17 or struct.unpack("!H", ip[6:8])[0] & 0x1FFF:
            continue  # not UDP, or a later fragment
        src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
        udp = ip[ihl:]
        if len(udp) < 8:
            continue
        sport, dport, ulen = struct.unpack("!HHH", udp[:6])
        packets.append(Packet(t - t0, src, sport, dst, dport, ulen - 8, bytes(udp[8:])))
    return packets


def summarize(packets, first=12, last=12):
    lines = ["%d UDP datagrams captured" % len(packets)]
    counts = collections.Counter((p.src, p.kind) for p in packets)
    for (src, kind), n in sorted(counts.items()):
        lines.append("  from %-15s %-6s x %d" % (src, kind, n))
    if len(packets) <= first + last:
        lines += [p.describe() for p in packets]
    else:
        lines += [p.describe() for p in packets[:first]]
        lines.append("  [... %d more ...]" % (len(packets) - first - last))
        lines += [p.describe() for p in packets[-last:]]
    # requests, OACKs and errors are the interesting part of a long capture
    notable = [p for p in packets if p.kind in ("RRQ", "WRQ", "OACK", "ERROR")]
    if notable and len(packets) > first + last:
        lines.append("requests, OACKs and errors:")
        lines += [p.describe() for p in notable[-40:]]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# The serial console of a QEMU guest
# --------------------------------------------------------------------------

class Console:
    """QEMU with its first serial port on stdin/stdout."""

    def __init__(self, argv, logpath, errpath):
        self.logfile = open(logpath, "wb")
        self.errpath = errpath
        self.started = time.monotonic()
        with open(errpath, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         start_new_session=True)
        self.raw = bytearray()
        self.arrivals = []  # (seconds since start, length of raw after the chunk)
        self.lock = threading.Condition()
        self.pos = 0  # where the next expect() starts looking
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            with self.lock:
                if chunk:
                    self.raw += chunk
                    self.arrivals.append((time.monotonic() - self.started, len(self.raw)))
                    self.logfile.write(chunk)
                    self.logfile.flush()
                self.lock.notify_all()
            if not chunk:
                return

    @property
    def text(self):
        """The console so far, without terminal escapes and carriage returns."""
        with self.lock:
            raw = bytes(self.raw)
        return ANSI.sub(b"", raw).replace(b"\r", b"").decode("utf-8", "replace")

    def timeline(self):
        """The console as lines, each prefixed with the second it was
        complete (since QEMU started)."""
        with self.lock:
            raw, arrivals = bytes(self.raw), list(self.arrivals)
        out, start, i = [], 0, 0
        while start < len(raw):
            end = raw.find(b"\n", start)
            end = len(raw) if end < 0 else end + 1
            while i < len(arrivals) - 1 and arrivals[i][1] < end:
                i += 1
            t = arrivals[i][0] if arrivals else 0.0
            line = ANSI.sub(b"", raw[start:end]).replace(b"\r", b"").rstrip(b"\n")
            if line.strip():
                out.append("%7.2f %s" % (t, line.decode("utf-8", "replace")))
            start = end
        return "\n".join(out)

    @property
    def elapsed(self):
        return time.monotonic() - self.started

    def expect(self, pattern, timeout):
        """Wait until ``pattern`` (a regex) shows on the console after what
        earlier expects consumed; the match, or ``None`` on timeout or exit."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text
            m = rx.search(text, self.pos)
            if m:
                self.pos = m.end()
                return m
            with self.lock:
                if self.proc.poll() is not None and not self.reader.is_alive():
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(min(left, 0.5))

    def send(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        stop_process(self.proc, 5)
        self.reader.join(5)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.logfile.close()

    @property
    def stderr(self):
        try:
            with open(self.errpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


# --------------------------------------------------------------------------
# The lab
# --------------------------------------------------------------------------

class Lab:
    """One boot's network namespace and programs; ``server_addr`` is the
    address DHCP names as the TFTP server."""

    def __init__(self, workdir, multihomed, twistd):
        self.dir = workdir
        self.multihomed = multihomed
        self.twistd = twistd
        self.ns = "txfbtftp-fw%d-%d" % (os.getpid(), next(_serial))
        self.server_addr = SECOND if multihomed else FIRST
        self.other_addr = FIRST if multihomed else None
        self.procs = {}
        self.console = None
        self.pcap = None
        self.packets = None
        self.capture_note = ""
        self.dropped = None
        self.milestones = []  # (what, seconds since QEMU started) of each expect met
        self._ns_made = False

    # -- set-up -----------------------------------------------------------

    def up(self):
        run("ip", "netns", "add", self.ns)
        self._ns_made = True
        run("ip", "-n", self.ns, "link", "set", "lo", "up")
        run("ip", "-n", self.ns, "tuntap", "add", "dev", TAP, "mode", "tap")
        run("ip", "-n", self.ns, "addr", "add", FIRST + "/24", "dev", TAP)
        if self.multihomed:
            run("ip", "-n", self.ns, "addr", "add", SECOND + "/24", "dev", TAP)
        run("ip", "-n", self.ns, "addr", "add", RA_PREFIX + "1/64", "dev", TAP, "nodad")
        run("ip", "-n", self.ns, "link", "set", TAP, "up")
        return self

    def in_ns(self, *argv):
        return ["ip", "netns", "exec", self.ns] + [str(a) for a in argv]

    def _spawn(self, name, argv, ready=None, timeout=20):
        """Start a program in the namespace, its output in ``<name>.log``;
        wait until ``ready`` appears in that log."""
        path = os.path.join(self.dir, name + ".log")
        with open(path, "wb") as out:
            proc = subprocess.Popen(self.in_ns(*argv), stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.dir)
        self.procs[name] = proc
        deadline = time.monotonic() + timeout
        while ready is not None:
            if ready in self.log(name):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError("%s did not start (exit %s):\n$ %s\n%s" % (
                    name, proc.poll(), " ".join(argv), tail(self.log(name), 30)))
            time.sleep(0.05)
        return proc

    def log(self, name):
        try:
            with open(os.path.join(self.dir, name + ".log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def serve(self, root, *extra):
        """``twistd tftp`` serving ``root``: on FIRST alone when single-homed,
        on ``::`` when multi-homed.  JSON log lines (one session record per
        transfer) go to ``txfbtftp.log``."""
        iface = "::" if self.multihomed else FIRST
        argv = [self.twistd, "-n", "--pidfile=", "tftp", "--backend", "fs:%s" % root,
                "--port", TFTP_PORT, "--interface", iface, "--stats-interval", "0",
                "--log-format", "json"] + list(extra)
        self._spawn("txfbtftp", argv, ready="TFTP server listening on")

    def dhcp(self, *options):
        """dnsmasq as the DHCP server alone (``--port=0``: no DNS; no TFTP),
        giving the guest CLIENT and the extra ``options`` (dnsmasq long
        options without the dashes)."""
        argv = ["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--log-dhcp", "--port=0",
                "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--user=root", "--group=root",
                "--pid-file=", "--interface=" + TAP, "--bind-interfaces",
                "--dhcp-leasefile=" + os.path.join(self.dir, "dnsmasq.leases"),
                "--dhcp-range=%s.100,%s.150,255.255.255.0,1h" % (SUBNET, SUBNET),
                "--dhcp-host=%s,%s" % (MAC, CLIENT), "--enable-ra", "--dhcp-range=%s,ra-only" % RA_PREFIX]
        argv += ["--" + o for o in options]
        self._spawn("dnsmasq", argv, ready="DHCP, IP range")

    def capture(self):
        """Capture every frame on the tap (tests/firmware/capture.py: a raw
        socket that drains the kernel's queue before it stops), each cut to
        300 bytes: requests, OACKs and errors fit whole."""
        self.pcap = os.path.join(self.dir, "tap0.pcap")
        self._spawn("capture", [sys.executable, os.path.join(HERE, "capture.py"), TAP, self.pcap, 300],
                    ready="listening on")

    def sercon(self):
        """QEMU arguments that make SeaBIOS copy its screen (and what option
        ROMs and boot loaders print through the BIOS) to the serial port."""
        path = os.path.join(self.dir, "sercon-port")
        with open(path, "wb") as f:
            f.write(struct.pack("<H", 0x3F8))
        return ["-fw_cfg", "name=etc/sercon-port,file=%s" % path]

    def boot(self, *qemu_args, memory=1024, nic="e1000", romfile=None):
        """Start QEMU (TCG unless ``TXFBTFTP_QEMU_ACCEL`` says otherwise) in
        the namespace, its NIC on the tap and the first boot device, its first
        serial port on a pipe; the :class:`Console`."""
        accel = os.environ.get("TXFBTFTP_QEMU_ACCEL", "tcg")
        device = "%s,netdev=n0,mac=%s,bootindex=1" % (nic, MAC)
        if romfile is not None:
            device += ",romfile=%s" % romfile
        argv = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
                "-accel", accel, "-m", str(memory), "-no-reboot", "-monitor", "none",
                "-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0",
                "-netdev", "tap,id=n0,ifname=%s,script=no,downscript=no" % TAP,
                "-device", device] + [str(a) for a in qemu_args]
        self.console = Console(self.in_ns(*argv), os.path.join(self.dir, "serial.log"),
                               os.path.join(self.dir, "qemu.log"))
        self.qemu_argv = argv
        return self.console

    # -- results ----------------------------------------------------------

    def stop_capture(self):
        """Stop the capture (it first reads what the kernel holds for it)
        and read what it captured."""
        proc = self.procs.get("capture")
        if proc is not None:
            stop_process(proc, 60)
        if self.packets is None:
            try:
                if self.pcap is None:
                    raise LabError("nothing was captured")
                self.packets = read_pcap(self.pcap)
            except (OSError, LabError) as exc:
                self.packets = []
                self.capture_note = "capture unreadable: %s" % exc
            m = re.search(r"captured (\d+) dropped (\d+)", self.log("capture"))
            self.dropped = int(m.group(2)) if m else None
            if m is None:
                self.capture_note = "the capture did not end cleanly:\n" + tail(self.log("capture"), 10)
        return self.packets

    def server_records(self):
        """The server's JSON log lines, parsed."""
        out = []
        for line in self.log("txfbtftp").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def sessions(self):
        """The server's session records (its JSON log lines with a verb)."""
        return [rec for rec in self.server_records() if "verb" in rec and "path" in rec]

    def server_text(self):
        """The server's log as text (the ``text`` of each JSON line)."""
        lines = []
        for line in self.log("txfbtftp").splitlines():
            try:
                rec = json.loads(line)
                lines.append(rec.get("text") or rec.get("log_text") or line)
            except ValueError:
                lines.append(line)
        return "\n".join(lines)

    def report(self):
        """Everything needed to see why a boot failed."""
        parts = ["== lab: namespace %s, %s, TFTP server %s, guest %s %s" % (
            self.ns, "multi-homed" if self.multihomed else "single-homed", self.server_addr, CLIENT, MAC)]
        if self.console is not None:
            parts.append("== serial console (%.1f s since QEMU started) ==" % self.console.elapsed)
            parts.append(tail(self.console.timeline(), 60))
            if self.console.proc.poll() is not None:
                parts.append("== QEMU exited with %s; its stderr ==" % self.console.proc.poll())
                parts.append(tail(self.console.stderr, 20))
        try:
            packets = self.stop_capture()
            parts.append("== packets on %s ==" % TAP)
            if self.capture_note:
                parts.append(self.capture_note)
            parts.append(summarize(packets))
        except Exception as exc:  # the report must not hide the real failure
            parts.append("== packets: %r" % exc)
        parts.append("== txfbtftp log ==")
        parts.append(tail(self.server_text(), 60))
        parts.append("== dnsmasq log ==")
        parts.append(tail(self.log("dnsmasq"), 25))
        return "\n".join(parts)

    def fail(self, message):
        raise AssertionError(message + "\n" + self.report())

    def check(self, condition, message):
        if not condition:
            self.fail(message)

    def powered_off(self, timeout=30):
        """Wait for QEMU to exit (the guest powered off, halted or reset:
        QEMU runs with ``-no-reboot``), or fail."""
        code = self.console.wait_exit(timeout)
        self.check(code is not None, "the guest did not power off within %ss" % timeout)
        self.milestones.append(("off", self.console.elapsed))
        return code

    def expect(self, pattern, timeout, what):
        """Wait for ``pattern`` on the console or fail with the report."""
        m = self.console.expect(pattern, timeout)
        if m is None:
            state = "QEMU exited" if self.console.proc.poll() is not None else "timed out after %ss" % timeout
            self.fail("%s: %s waiting for %r" % (what, state, pattern))
        self.milestones.append((what, self.console.elapsed))
        return m

    # -- clean-up ---------------------------------------------------------

    def close(self):
        if self.console is not None:
            self.console.stop()
        for proc in self.procs.values():
            stop_process(proc, 5)
        if self._ns_made:
            run("ip", "-n", self.ns, "link", "del", TAP, check=False)
            run("ip", "netns", "del", self.ns, check=False)
            self._ns_made = False
