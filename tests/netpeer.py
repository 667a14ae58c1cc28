"""Both ends of tests/test_netns.py, each run inside its own network namespace.

On the server, ``--backend python:tests/netpeer.py:whoami`` answers
``whoami`` with the addresses its ``TransferRequest`` carried.  On the client,
``python tests/netpeer.py HOST PORT`` probes the server at one of its
addresses with a bare socket (standard library only, so it starts fast) and
prints, as JSON, every reply and the address and port it came from; and
``python tests/netpeer.py try HOST PORT SOURCE,read|write,NAME ...`` makes
each attempt from its own source address, all at once, and prints what each
got: ``["ok", sha256]``, ``["error", code]`` or ``["silent"]``.
"""
import hashlib
import json
import socket
import sys
import threading


def whoami():
    """The backend: ``whoami`` is the request's client and local address, as JSON."""
    from zope.interface import implementer

    from txfbtftp import BytesReader, FileNotFound, IBackend

    @implementer(IBackend)
    class Whoami:
        def get_reader(self, path, request):
            if path != "whoami":
                raise FileNotFound()
            return BytesReader(json.dumps({"client": request.client, "local": request.local}).encode())

    return Whoami()


def _request(name, options=()):
    opts = b"".join(b"%s\0%s\0" % (k.encode(), v.encode()) for k, v in options)
    return b"\0\1" + name.encode() + b"\0octet\0" + opts


def _opcode(data):
    return int.from_bytes(data[:2], "big")


class Probe:
    def __init__(self, host, port):
        self.server = (host, port)
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.replies = []

    def socket(self):
        s = socket.socket(self.family, socket.SOCK_DGRAM)
        s.settimeout(3)
        return s

    def recv(self, s, what):
        data, src = s.recvfrom(70000)
        error = int.from_bytes(data[2:4], "big") if _opcode(data) == 5 else None
        self.replies.append([what, src[0], src[1], _opcode(data), error])
        return data, src[:2]

    def download(self, name, options=()):
        """Lock-step; ``(bytes, our address)``."""
        s = self.socket()
        s.sendto(_request(name, options), self.server)
        data, tid = self.recv(s, "first")
        blksize = 512
        if data[:2] == b"\0\6":
            fields = data[2:].split(b"\0")
            blksize = int(dict(zip(fields[::2], fields[1::2], strict=False)).get(b"blksize", 512))
            s.sendto(b"\0\4\0\0", tid)
            data, tid = self.recv(s, "data")
        out = []
        while True:
            assert data[:2] == b"\0\3", data[:40]
            out.append(data[4:])
            s.sendto(b"\0\4" + data[2:4], tid)
            if len(data) - 4 < blksize:
                break
            data, tid = self.recv(s, "data")
        me = s.getsockname()[:2]
        s.close()
        return b"".join(out), me

    def error(self, what, packet):
        s = self.socket()
        s.sendto(packet, self.server)
        self.recv(s, what)
        s.close()


def attempt(server, source, op, name, out):
    """One lock-step read, or an upload of 2000 bytes, from ``source``."""
    s = socket.socket(socket.AF_INET6 if ":" in source else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.5)
    s.bind((source, 0))
    body = (name * 200).encode()[:2000]
    s.sendto((b"\0\2" if op == "write" else b"\0\1") + name.encode() + b"\0octet\0", server)
    got, block = [], 0
    try:
        while True:
            data, tid = s.recvfrom(70000)
            if data[:2] == b"\0\5":
                out.append(["error", int.from_bytes(data[2:4], "big")])
                return
            if op == "read":
                got.append(data[4:])
                s.sendto(b"\0\4" + data[2:4], tid)
                if len(data) - 4 < 512:
                    out.append(["ok", hashlib.sha256(b"".join(got)).hexdigest()])
                    return
            else:
                if int.from_bytes(data[2:4], "big") * 512 > len(body):
                    out.append(["ok", hashlib.sha256(body).hexdigest()])
                    return
                chunk = body[block * 512:(block + 1) * 512]
                block += 1
                s.sendto(b"\0\3" + block.to_bytes(2, "big") + chunk, tid)
    except TimeoutError:
        out.append(["silent"] if not got and block == 0 else ["stalled"])
    finally:
        s.close()


def attempts(host, port, *specs):
    results = [[] for _ in specs]
    threads = [threading.Thread(target=attempt, args=((host, int(port)),) + tuple(spec.split(",")) + (out,))
               for spec, out in zip(specs, results, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump([r[0] for r in results], sys.stdout)


def main(host, port):
    p = Probe(host, int(port))
    who, me = p.download("whoami", [("blksize", "1468"), ("tsize", "0")])
    data, _ = p.download("small.bin")
    p.error("not-found", _request("missing"))
    p.error("stray-ack", b"\0\4\0\1")
    p.error("malformed", b"\0\1no-mode\0")
    json.dump({"me": me, "whoami": json.loads(who), "sha256": hashlib.sha256(data).hexdigest(),
               "replies": p.replies}, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "try":
        attempts(*sys.argv[2:])
    else:
        main(*sys.argv[1:])
