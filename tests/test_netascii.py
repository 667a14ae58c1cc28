from txfbtftp._protocol.netascii import Decoder, encode
from txfbtftp._netascii import NetasciiReader, NetasciiWriter
from twisted.internet.defer import succeed


def test_encode():
    assert encode(b"a\nb\rc\r\n") == b"a\r\nb\r\x00c\r\x00\r\n"


def test_decoder_across_block_boundaries():
    text = b"line1\nline2\r\nbare\rcr\n" * 50
    wire = encode(text)
    for cut in (1, 2, 3, 7, 512):
        d = Decoder()
        out = b"".join(d.feed(wire[i:i + cut]) for i in range(0, len(wire), cut)) + d.flush()
        assert out == text, cut


def test_decoder_keeps_a_final_lone_cr():
    d = Decoder()
    assert d.feed(b"ab\r") + d.flush() == b"ab\r"


class _Reader:
    def __init__(self, data, deferred=False):
        self.data, self.pos, self.deferred, self.closed = data, 0, deferred, False
        self.size = len(data)

    def read(self, n):
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return succeed(out) if self.deferred else out

    def close(self):
        self.closed = True


def _drain(r, n):
    out = []
    while True:
        block = r.read(n)
        if not isinstance(block, bytes):
            got = []
            block.addCallback(got.append)
            block = got[0]
        out.append(block)
        if len(block) < n:
            return out


def test_reader_gives_exact_blocks_sync_and_async():
    text = b"x\n" * 3000 + b"end"
    for deferred in (False, True):
        r = NetasciiReader(_Reader(text, deferred), chunk=1000)
        assert r.size is None
        blocks = _drain(r, 512)
        assert all(len(b) == 512 for b in blocks[:-1]) and len(blocks[-1]) < 512
        assert b"".join(blocks) == encode(text)
        r.close()


def test_writer_decodes_and_flushes_on_commit():
    class W:
        def __init__(self):
            self.data, self.committed = b"", False

        def write(self, d):
            self.data += d

        def commit(self):
            self.committed = True

        def abort(self):
            pass

    w = W()
    nw = NetasciiWriter(w)
    nw.write(b"a\r")
    nw.write(b"\nb\r")
    nw.commit()
    assert w.data == b"a\nb\r" and w.committed
