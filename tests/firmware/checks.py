"""Assertions shared by the firmware boots, on the capture and the server's
session records.  Each failure carries the lab's report."""
import collections

from . import images
from .lab import FIRST, SECOND, TFTP_PORT

ROLLOVER = 65535


class Transfer:
    """One TFTP read as seen on the wire: the request and every datagram
    between the client's port and the server's session port."""

    def __init__(self, rrq):
        self.rrq = rrq
        self.client = (rrq.src, rrq.sport)
        self.port = None  # the server's session port
        self.replies = []  # server -> client
        self.answers = []  # client -> server session port

    @property
    def path(self):
        return self.rrq.fields()[0]

    @property
    def requested(self):
        return self.rrq.options()

    @property
    def oack(self):
        return next((p for p in self.replies if p.kind == "OACK"), None)

    @property
    def acknowledged(self):
        return self.oack.options() if self.oack else {}

    @property
    def data(self):
        return [p for p in self.replies if p.kind == "DATA"]

    def errors(self, side):
        packets = self.replies if side == "server" else self.answers
        return [p.error for p in packets if p.kind == "ERROR"]

    def __repr__(self):
        return "<%s:%d %r %s>" % (self.client[0], self.client[1], self.path, self.requested)


def transfers(packets):
    """The reads in the capture, in the order of their requests."""
    out, live = [], {}
    for p in packets:
        if p.kind == "RRQ" and p.dport == TFTP_PORT:
            t = Transfer(p)
            out.append(t)
            live[t.client] = t
            continue
        t = live.get((p.dst, p.dport))
        if t is not None and p.src in (FIRST, SECOND) and p.sport != 67:
            if t.port is None:
                t.port = p.sport
            if p.sport == t.port or p.sport == TFTP_PORT:
                t.replies.append(p)
            continue
        t = live.get((p.src, p.sport))
        if t is not None and p.dport == t.port:
            t.answers.append(p)
    return out


def named(lab, packets, path):
    """The transfers of ``path``; fails if there is none."""
    found = [t for t in transfers(packets) if t.path == path]
    lab.check(found, "the client never asked for %r" % path)
    return found


def network(lab, packets):
    """Every TFTP datagram the guest got came from the address DHCP named,
    every request went there, the capture lost nothing, and no OACK holds
    an option the request did not carry (PXELINUX aborts on one)."""
    lab.check(packets, "nothing was captured on the tap")
    lab.check(lab.dropped == 0, "the capture lost %s frames (or did not end cleanly): it proves nothing" % lab.dropped)
    strays = [p for p in packets if p.src in (FIRST, SECOND) and p.sport != 67 and p.src != lab.server_addr]
    lab.check(not strays, "%d UDP datagrams reached the guest from %s, not from %s, the address DHCP named; "
              "first: %s" % (len(strays), strays[0].src if strays else "", lab.server_addr,
                             strays[0].describe() if strays else ""))
    served = [p for p in packets if p.src == lab.server_addr and p.sport != 67]
    lab.check(any(p.kind == "DATA" for p in served), "no DATA from %s" % lab.server_addr)
    misdirected = [p for p in packets if p.kind in ("RRQ", "WRQ") and p.dst != lab.server_addr]
    lab.check(not misdirected, "requests sent elsewhere than %s: %s" % (
        lab.server_addr, [p.describe() for p in misdirected[:5]]))
    for t in transfers(packets):
        extra = set(t.acknowledged) - set(t.requested)
        lab.check(not extra, "OACK for %r holds options never asked for: %s" % (t.path, sorted(extra)))
        ended = [p.time for p in t.answers if p.kind == "ERROR"]
        if ended:  # an ERROR from the client ends the session and is never answered
            answered = [p for p in t.replies if p.kind == "ERROR" and p.time > ended[0]]
            lab.check(not answered, "the server answered the client's ERROR on %r: %s" % (
                t.path, [p.describe() for p in answered[:5]]))
    problems = [line for line in lab.server_records() if line.get("isError") or
                (line.get("log_level") or {}).get("name") in ("error", "critical")]
    lab.check(not problems, "the server logged errors: %s" % [p.get("text") or p.get("log_text") for p in problems])
    locals_ = collections.Counter(s.get("local") for s in lab.sessions())
    lab.check(set(locals_) == {lab.server_addr},
              "the server's session records name local addresses %s, expected only %s" % (
                  dict(locals_), lab.server_addr))


def linux_proof(lab, digest, payload):
    """The booted Linux ran /init, hashed the payload it was given right and
    powered off, and the network checks hold; the capture's packets."""
    lab.expect(r"txfbtftp-init: running", 120, "Linux /init")
    proof = lab.expect(images.PROOF, 60, "sha256")
    lab.powered_off()
    packets = lab.stop_capture()
    lab.check((proof.group(1), int(proof.group(2))) == (digest, payload),
              "the guest hashed %s (%s bytes), the payload is %s (%d bytes)" % (
                  proof.group(1), proof.group(2), digest, payload))
    network(lab, packets)
    return packets


def record(lab, path, outcome="ok", index=-1):
    """The server's session record for ``path`` (the last one by default)."""
    found = [s for s in lab.sessions() if s.get("path") == path]
    lab.check(found, "the server logged no session for %r" % path)
    rec = found[index]
    if outcome is not None:
        lab.check(rec.get("outcome") == outcome, "session for %r: outcome %r, expected %r (%s)" % (
            path, rec.get("outcome"), outcome, rec.get("text")))
    return rec


def not_found(lab, path):
    """The server answered ``path`` with ERROR 1 and logged it so."""
    rec = record(lab, path, outcome=None)
    lab.check(rec.get("outcome") == "server-error" and rec.get("error_code") == 1,
              "%r: expected a logged ERROR 1 (not found), got %s" % (path, rec.get("text")))


def rollover(lab, transfer, size):
    """The transfer of a ``size``-byte file went past block 65535: the size
    needs more blocks than that at the block size the OACK granted, the
    DATA block numbers wrapped to 0 on the wire, and the last DATA held
    what was left (nothing, for a multiple of the block size)."""
    blksize = int(transfer.acknowledged.get("blksize", 512))
    blocks = size // blksize + 1
    lab.check(blocks > ROLLOVER, "%r is %d bytes, %d blocks of %d: not past block %d" % (
        transfer.path, size, blocks, blksize, ROLLOVER))
    wire = [p.block for p in transfer.data]
    lab.check(ROLLOVER in wire and 0 in wire[wire.index(ROLLOVER):],
              "DATA for %r never went from block 65535 to 0" % transfer.path)
    last = transfer.data[-1]
    lab.check((last.block, last.length - 4) == (blocks % 65536, size % blksize),
              "the last DATA for %r was %s; expected block %d with %d bytes" % (
                  transfer.path, last.describe(), blocks % 65536, size % blksize))
    return blksize


def edk2_tsize_probe(lab, packets, path):
    """EDK2's PXE base code fetches the boot program twice: first with
    ``tsize`` to learn its size, aborting with ERROR 8 right after the OACK,
    then from a new port without ``tsize``; the second time it asks for
    ``windowsize``, which the server grants."""
    probe, fetch = named(lab, packets, path)[:2]
    lab.check("tsize" in probe.requested and probe.oack is not None,
              "EDK2's first request for %r was no tsize probe: %s" % (path, probe.requested))
    lab.check([e[0] for e in probe.errors("client")] == [8],
              "EDK2 did not end its tsize probe with ERROR 8: %s" % probe.errors("client"))
    lab.check(fetch.client[1] != probe.client[1], "EDK2 fetched %r again from the same port" % path)
    lab.check("tsize" not in fetch.requested, "EDK2's second request carried tsize: %s" % fetch.requested)
    lab.check("windowsize" in fetch.requested and fetch.acknowledged.get("windowsize") == fetch.requested["windowsize"],
              "EDK2's windowsize was not granted: asked %s, OACK %s" % (fetch.requested, fetch.acknowledged))
    first = record(lab, path, outcome=None, index=0)
    lab.check(first.get("tsize_probe") is True, "the server did not log the tsize probe: %s" % first.get("text"))
    return probe, fetch
