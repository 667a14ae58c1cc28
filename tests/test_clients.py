"""End to end: real TFTP clients against a real server on loopback."""
import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from txfbtftp import FilesystemBackend
from txfbtftp._protocol.netascii import encode

from . import clients

ALL = clients.CLIENTS
STRICT = os.environ.get("TXFBTFTP_REQUIRE_CLIENTS") == "1"


@pytest.fixture
def files(root):
    (root / "f3m.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 77))
    text = b"".join(b"line %d: some text\n" % i for i in range(20000)) + b"bare\rcr\r\nmixed\n"
    (root / "text.txt").write_bytes(text)
    return root


@pytest_twisted.inlineCallbacks
def settled(svc, ended):
    """The last session's record, once the client's final ACK (already sent) is processed."""
    for _ in range(200):
        if ended:
            return ended[-1]
        yield deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("no session ended")


def _host(family):
    return "::1" if family == 6 else "127.0.0.1"


def _start(serve, root, family=4, **kw):
    iface = "::1" if family == 6 else "127.0.0.1"
    return serve(backend=FilesystemBackend(str(root), writable=True), interfaces=(iface,), **kw)


def _attempt(client, direction, *args, **kw):
    fn = clients.download if direction == "download" else clients.upload
    try:
        options = {k: v for k, v in kw.items() if k != "timeout"}
        clients.build_command(client, direction, *_cmd_args(direction, args), **options, timeout=kw.get("timeout", 60))
    except clients.Unsupported as e:
        if STRICT and isinstance(e, clients.ClientUnavailable):
            pytest.fail(str(e))
        pytest.skip(str(e))
    return deferToThread(fn, client, *args, **kw)


def _cmd_args(direction, args):
    host, port, a, b = args
    # build_command takes (host, port, remote, local) for both directions.
    return (host, port, a, b) if direction == "download" else (host, port, b, a)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("client", ALL)
@pytest_twisted.inlineCallbacks
def test_download_octet(serve, files, tmp_path, client, family):
    svc = _start(serve, files, family)
    out = tmp_path / "out.bin"
    res = yield _attempt(client, "download", _host(family), svc.bound_port, "f3m.bin", out)
    res.check()
    assert out.read_bytes() == (files / "f3m.bin").read_bytes()


@pytest.mark.parametrize("blksize", [512, 1468, 65464])
@pytest.mark.parametrize("client", ["curl", "atftp", "busybox"])
@pytest_twisted.inlineCallbacks
def test_download_blksize(serve, files, tmp_path, client, blksize):
    ended = []
    svc = _start(serve, files, on_record=ended.append)
    out = tmp_path / "out.bin"
    res = yield _attempt(client, "download", "127.0.0.1", svc.bound_port, "f3m.bin", out, blksize=blksize)
    res.check()
    assert out.read_bytes() == (files / "f3m.bin").read_bytes()
    if blksize != 512:  # busybox sends no option for the default
        assert (yield settled(svc, ended)).blksize == blksize


@pytest.mark.parametrize("windowsize", [4, 16])
@pytest_twisted.inlineCallbacks
def test_download_windowsize_atftp(serve, files, tmp_path, windowsize):
    ended = []
    svc = _start(serve, files, on_record=ended.append)
    out = tmp_path / "out.bin"
    res = yield _attempt("atftp", "download", "127.0.0.1", svc.bound_port, "f3m.bin", out,
                         blksize=1468, windowsize=windowsize)
    res.check()
    assert out.read_bytes() == (files / "f3m.bin").read_bytes()
    assert (yield settled(svc, ended)).windowsize == windowsize


@pytest.mark.parametrize("client", ["tftp-hpa", "atftp"])
@pytest_twisted.inlineCallbacks
def test_netascii_both_ways(serve, files, tmp_path, client):
    svc = _start(serve, files)
    out = tmp_path / "text.txt"
    res = yield _attempt(client, "download", "127.0.0.1", svc.bound_port, "text.txt", out, mode="netascii")
    res.check()
    assert out.read_bytes() == (files / "text.txt").read_bytes()
    res = yield _attempt(client, "upload", "127.0.0.1", svc.bound_port, out, "text-up.txt", mode="netascii")
    res.check()
    assert (files / "text-up.txt").read_bytes() == (files / "text.txt").read_bytes()


@pytest_twisted.inlineCallbacks
def test_netascii_wire_form_seen_by_curl(serve, files, tmp_path):
    """curl does not translate, so it shows exactly what went on the wire."""
    svc = _start(serve, files)
    out = tmp_path / "wire.txt"
    res = yield _attempt("curl", "download", "127.0.0.1", svc.bound_port, "text.txt", out,
                         mode="netascii", allow_untranslated=True)
    res.check()
    assert out.read_bytes() == encode((files / "text.txt").read_bytes())


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("client", ALL)
@pytest_twisted.inlineCallbacks
def test_upload_octet(serve, files, tmp_path, client, family):
    svc = _start(serve, files, family)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(1024 * 1024 + 5))
    res = yield _attempt(client, "upload", _host(family), svc.bound_port, src, "up-%s.bin" % client)
    res.check()
    assert (files / ("up-%s.bin" % client)).read_bytes() == src.read_bytes()
    assert not [p for p in files.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("client,kw", [("atftp", {"blksize": 1468, "windowsize": 8}), ("curl", {"blksize": 65464}),
                                       ("busybox", {"blksize": 1468})])
@pytest_twisted.inlineCallbacks
def test_upload_with_options(serve, files, tmp_path, client, kw):
    ended = []
    svc = _start(serve, files, on_record=ended.append, dally=0.05)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(2 * 1024 * 1024 + 1))
    res = yield _attempt(client, "upload", "127.0.0.1", svc.bound_port, src, "up.bin", **kw)
    res.check()
    assert (files / "up.bin").read_bytes() == src.read_bytes()
    neg = yield settled(svc, ended)
    assert neg.blksize == kw["blksize"] and neg.windowsize == kw.get("windowsize", 1)


@pytest.mark.parametrize("client", ALL)
@pytest_twisted.inlineCallbacks
def test_not_found_is_reported(serve, files, tmp_path, client):
    svc = _start(serve, files)
    res = yield _attempt(client, "download", "127.0.0.1", svc.bound_port, "no/such/file", tmp_path / "x")
    assert not res.ok
    err = clients.server_error(res)
    assert err is not None and err.message == "File not found"
    assert err.code in (1, None)


@pytest_twisted.inlineCallbacks
def test_upload_refused_when_file_exists(serve, files, tmp_path):
    svc = _start(serve, files)
    src = tmp_path / "src.bin"
    src.write_bytes(b"new")
    res = yield _attempt("busybox", "upload", "127.0.0.1", svc.bound_port, src, "hello.txt")
    assert clients.server_error(res).code == 6
    assert (files / "hello.txt").read_bytes() == b"Hello from txfbtftp\n"


@pytest_twisted.inlineCallbacks
def test_large_file_wraps_block_numbers_at_512(serve, root, tmp_path):
    """33 MiB at 512-byte blocks is 67,585 blocks: the counter wraps past 65535."""
    big = root / "big.bin"
    with open(big, "wb") as f:
        f.write(os.urandom(1 << 20) * 33 + b"tail")
    ended = []
    svc = _start(serve, root, on_record=ended.append)
    out = tmp_path / "big.bin"
    res = yield _attempt("curl", "download", "127.0.0.1", svc.bound_port, "big.bin", out, blksize=512, timeout=120)
    res.check()
    assert out.stat().st_size == big.stat().st_size
    assert out.read_bytes() == big.read_bytes()
    assert (yield settled(svc, ended)).bytes_transferred == big.stat().st_size


@pytest_twisted.inlineCallbacks
def test_larger_than_4_gib(serve, root):
    """Sizes past 32 bits: tsize, byte counts and a second block-number wrap."""
    size = (4 << 30) + 100000
    with open(root / "huge.img", "wb") as f:
        f.truncate(size)  # sparse: no disk, fast reads
    ended = []
    svc = _start(serve, root, on_record=ended.append)
    res = yield _attempt("curl", "download", "127.0.0.1", svc.bound_port, "huge.img", "/dev/null",
                         blksize=65464, timeout=300)
    res.check()
    record = yield settled(svc, ended)
    assert record.tsize == size
    assert record.bytes_transferred == size and record.outcome == "ok"
