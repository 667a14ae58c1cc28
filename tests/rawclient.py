"""A bare UDP peer for poking a server with exact packets."""
from twisted.internet import reactor
from twisted.internet.defer import DeferredQueue, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol

from txfbtftp._protocol import packet


class RawClient(DatagramProtocol):
    noisy = False

    def __init__(self):
        self.queue = DeferredQueue()
        self.received = []

    def datagramReceived(self, data, addr):
        self.received.append((data, addr))
        self.queue.put((data, addr))

    def send(self, data, addr):
        self.transport.write(data, addr)

    def recv(self, timeout=5.0):
        """The next datagram, as ``(data, addr)``; fails on timeout."""
        return self.queue.get().addTimeout(timeout, reactor)

    @inlineCallbacks
    def recv_from(self, tid, timeout=5.0):
        """The next datagram from ``tid`` (the server's transfer ID), as a
        client locked on it takes them; others (a stray packet for a port
        reused since) are skipped."""
        while True:
            data, addr = yield self.recv(timeout)
            if tid is None or addr == tid:
                return data, addr

    @inlineCallbacks
    def quiet(self, seconds):
        """Collect what arrives within ``seconds``."""
        got = []
        while True:
            try:
                got.append((yield self.recv(seconds)))
            except Exception:
                return got

    def close(self):
        return self.transport.stopListening()


def listen(host="127.0.0.1"):
    c = RawClient()
    reactor.listenUDP(0, c, interface=host)
    return c


@inlineCallbacks
def download(client, server, name, options=None, ack_oack=True):
    """Fetch ``name`` in lock-step (or by windows) and return (bytes, oack, server TID)."""
    blksize = int((options or {}).get("blksize", 512))
    window = int((options or {}).get("windowsize", 1))
    client.send(packet.request(packet.RRQ, name, "octet", options), server)
    data, tid = yield client.recv()
    while packet.opcode_of(data) not in (packet.OACK, packet.DATA, packet.ERROR):
        data, tid = yield client.recv()  # no answer to a request: a stray packet
    oack = None
    if packet.opcode_of(data) == packet.OACK:
        oack = packet.parse_oack(data)
        blksize = int(oack.get("blksize", 512))
        window = int(oack.get("windowsize", 1))
        if not ack_oack:
            return b"", oack, tid
        client.send(packet.ack(0), tid)
        data, tid = yield client.recv_from(tid)
    got = yield rest(client, tid, data, blksize, window)
    return got, oack, tid


@inlineCallbacks
def rest(client, tid, data, blksize=512, window=1):
    """The file from its first DATA (``data``) on, ACKing as a client does."""
    out, expect, since_ack = [], 1, 0
    while True:
        op = packet.opcode_of(data)
        if op == packet.ERROR:
            err = packet.parse_error(data)
            raise RuntimeError("ERROR %d %s" % (err.code, err.message))
        assert op == packet.DATA, data[:4]
        block = (data[2] << 8) | data[3]
        if block == expect & 0xFFFF:
            out.append(data[4:])
            expect += 1
            since_ack += 1
            last = len(data) - 4 < blksize
            if last or since_ack >= window:
                client.send(packet.ack(block), tid)
                since_ack = 0
            if last:
                return b"".join(out)
        elif window == 1 and block == (expect - 1) & 0xFFFF:
            client.send(packet.ack(block), tid)  # our ACK was lost: the server repeats, we answer again
        data, _ = yield client.recv_from(tid)
