"""Measures what a TFTP server sends to an address that never answers: a
reflection attack's view of it.  Standard library only; run inside a client
network namespace as ``python reflector.py HOST PORT SECONDS CASE[@SOURCE]...``.

Each case runs from its own source address (so per-address budgets do not
mix), all at once, and listens ``SECONDS``; the output is one JSON object per
case: bytes sent and received with IP and UDP headers counted (what a
reflection costs on the wire) and every reply as ``[opcode, size, port]``.

Cases: ``plain`` (an RRQ for pxelinux.0), ``options`` (the same with blksize,
windowsize and tsize), ``burst`` (50 plain RRQs from 50 ports within a
second), ``spoofed-ack`` (an RRQ for big.bin with blksize 65464 and
windowsize 64, then a blind ACK 0 to the listening port, as an attacker who
cannot see the OACK sends it), ``junk`` (100 undecodable datagrams).
"""
import json
import select
import socket
import sys
import threading
import time

HEADERS = {socket.AF_INET: 28, socket.AF_INET6: 48}


def request(name, options=()):
    opts = b"".join(b"%s\0%s\0" % (k.encode(), v.encode()) for k, v in options)
    return b"\0\1" + name.encode() + b"\0octet\0" + opts


PLAIN = request("pxelinux.0")
OPTIONS = request("pxelinux.0", (("blksize", "1468"), ("windowsize", "4"), ("tsize", "0")))
BIG = request("big.bin", (("blksize", "65464"), ("windowsize", "64")))
ACK0 = b"\0\4\0\0"
JUNK = b"\0\x09" + b"x" * 20


class Case:
    def __init__(self, name, server, source, seconds):
        self.name, self.server, self.seconds = name, server, seconds
        self.family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        self.source = source
        self.sent = self.received = 0
        self.replies = []
        self.sockets = []

    def socket(self):
        s = socket.socket(self.family, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind((self.source or "", 0))
        self.sockets.append(s)
        return s

    def send(self, s, data, to=None):
        s.sendto(data, to or self.server)
        self.sent += len(data) + HEADERS[self.family]

    def run(self):
        if self.name == "burst":
            for _ in range(50):
                self.send(self.socket(), PLAIN)
                time.sleep(0.02)
        else:
            s = self.socket()
            if self.name == "plain":
                self.send(s, PLAIN)
            elif self.name == "options":
                self.send(s, OPTIONS)
            elif self.name == "spoofed-ack":
                self.send(s, BIG)
                time.sleep(0.05)
                self.send(s, ACK0)
            elif self.name == "junk":
                for _ in range(100):
                    self.send(s, JUNK)
            else:
                raise SystemExit("unknown case %r" % self.name)
        self.listen()

    def listen(self):
        end = time.monotonic() + self.seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select(self.sockets, [], [], left)
            for s in ready:
                data, src = s.recvfrom(70000)
                self.received += len(data) + HEADERS[self.family]
                self.replies.append([int.from_bytes(data[:2], "big"), len(data), src[1]])

    def result(self):
        return {"case": self.name, "sent": self.sent, "received": self.received, "replies": self.replies,
                "ratio": round(self.received / self.sent, 2)}


def main(argv):
    host, port, seconds = argv[0], int(argv[1]), float(argv[2])
    cases = []
    for spec in argv[3:]:
        name, _, source = spec.partition("@")
        cases.append(Case(name, (host, port), source or None, seconds))
    threads = [threading.Thread(target=c.run) for c in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in cases:
        print(json.dumps(c.result()))


if __name__ == "__main__":
    main(sys.argv[1:])
