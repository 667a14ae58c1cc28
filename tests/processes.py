"""Real server processes for the daemon tests: started as an operator would,
watched through their log, stopped by signal; and a plain-socket TFTP client
that can pause between blocks, for what happens while a transfer is in flight."""
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

BIN = os.path.dirname(sys.executable)
TXFBTFTP = [os.path.join(BIN, "txfbtftp")]
TWISTD = [os.path.join(BIN, "twistd")]


def free_port(host="127.0.0.1", kind=socket.SOCK_DGRAM):
    """A port free on ``host`` now (UDP, or TCP with ``kind=SOCK_STREAM``)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_ports(count, hosts=("::",)):
    """``count`` consecutive UDP ports, free on every one of ``hosts`` (``::``:
    both families), below the kernel's ephemeral range so no client socket
    takes them meanwhile."""
    for _ in range(100):
        low = random.randrange(20000, 32000)
        held = []
        try:
            for port in range(low, low + count):
                for host in hosts:
                    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
                    held.append(s)
                    s.bind((host, port))
            return low
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no free port range")


class Server:
    """A command run as a server: its combined output kept, line by line."""

    def __init__(self, argv, cwd=None, env=None, prefix=()):
        self.argv = list(prefix) + list(argv)
        self.proc = subprocess.Popen(self.argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        self.lines = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    @property
    def log(self):
        return "".join(self.lines)

    def wait_for(self, text, timeout=20, count=1):
        """Until ``text`` appears ``count`` times in the output; fails with the output."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while self.log.count(text) < count:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and self.log.count(text) < count):
                    raise AssertionError("no %r in the server's output:\n%s" % (text, self.log[-4000:]))
                self._seen.wait(min(left, 0.2))

    def ready(self, count=1):
        self.wait_for("TFTP server listening on", count=count)
        return self

    def signal(self, number):
        self.proc.send_signal(number)

    def wait(self, timeout=30):
        return self.proc.wait(timeout)

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


class Client:
    """A lock-step TFTP client on a plain socket."""

    def __init__(self, server, timeout=5.0, family=socket.AF_INET):
        self.server = server
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.tid = None

    def send(self, data, to=None):
        self.sock.sendto(data, to or self.tid or self.server)

    def recv(self):
        """The next datagram from the server's transfer ID (locked on the first)."""
        while True:
            data, addr = self.sock.recvfrom(70000)
            if self.tid is None:
                self.tid = addr
            if addr == self.tid:
                return data

    def rrq(self, name, options=None):
        self.send(request(1, name, options))

    def download(self, name, options=None, pause=None):
        """The file's bytes; ``pause(block)`` runs before each ACK (to slow down)."""
        self.rrq(name, options)
        blksize = int((options or {}).get("blksize", 512))
        data = self.recv()
        if data[:2] == b"\0\6":
            self.send(b"\0\4\0\0")
            data = self.recv()
        out, expect = [], 1
        while True:
            check_not_error(data)
            block = int.from_bytes(data[2:4], "big")
            if data[:2] == b"\0\3" and block == expect & 0xFFFF:
                out.append(data[4:])
                if pause is not None:
                    pause(expect)
                self.send(b"\0\4" + data[2:4])
                if len(data) - 4 < blksize:
                    return b"".join(out)
                expect += 1
            data = self.recv()

    def close(self):
        self.sock.close()


class ServerError(Exception):
    def __init__(self, code, message):
        super().__init__("ERROR %d %s" % (code, message))
        self.code, self.message = code, message


def check_not_error(data):
    if data[:2] == b"\0\5":
        raise ServerError(int.from_bytes(data[2:4], "big"), data[4:].split(b"\0")[0].decode())


def request(opcode, name, options=None):
    opts = b"".join(b"%s\0%s\0" % (k.encode(), str(v).encode()) for k, v in (options or {}).items())
    return opcode.to_bytes(2, "big") + name.encode() + b"\0octet\0" + opts
