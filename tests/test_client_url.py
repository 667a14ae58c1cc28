"""tftp:// URLs as curl reads them, and what get/put refuse before any packet."""
import pytest
import pytest_twisted
from twisted.internet import reactor

from txfbtftp import TFTPURL, DiskFull, Limits, get, put


@pytest.mark.parametrize("url, host, port, path, mode", [
    ("tftp://192.0.2.1/pxelinux.0", "192.0.2.1", 69, "pxelinux.0", None),
    ("tftp://h:6969/boot/x", "h", 6969, "boot/x", None),
    ("tftp://h//abs/x", "h", 69, "/abs/x", None),
    ("tftp://[2001:db8::1]:6969/x", "2001:db8::1", 6969, "x", None),
    ("TFTP://[::1]/a%20b%3Bc", "::1", 69, "a b;c", None),
    ("tftp://h/menu.txt;mode=netascii", "h", 69, "menu.txt", "netascii"),
    ("tftp://h/x;mode=OCTET", "h", 69, "x", "octet"),
])
def test_urls(url, host, port, path, mode):
    u = TFTPURL.parse(url)
    assert (u.host, u.port, u.path, u.mode) == (host, port, path, mode)
    assert TFTPURL.parse(str(u)) == u


@pytest.mark.parametrize("url", ["http://h/x", "tftp://h/", "tftp://h", "tftp:///x", "tftp://h:0x/x",
                                 "tftp://h/x;mode=mail", "tftp://u@h/x", "tftp://h/x?y", "tftp://h/x#y"])
def test_bad_urls(url):
    with pytest.raises(ValueError):
        TFTPURL.parse(url)


@pytest.mark.parametrize("kwargs", [dict(blksize=7), dict(windowsize=0), dict(timeout=256), dict(mode="mail"),
                                    dict(timeout=1, utimeout=20000)])
def test_bad_options_raise_before_anything_is_sent(kwargs):
    with pytest.raises(ValueError):
        get(reactor, "tftp://127.0.0.1/x", **kwargs)
    with pytest.raises(ValueError):
        get(reactor, "tftp://127.0.0.1/x", "and a path")


@pytest_twisted.ensureDeferred
async def test_an_announced_size_lets_a_server_refuse_before_the_data(serve):
    svc = serve(writable=True, limits=Limits(max_upload_size=1000))
    with pytest.raises(DiskFull) as info:
        await put(reactor, "127.0.0.1", "big", port=svc.bound_port, source=b"x" * 5000)
    assert info.value.code == 3 and "limit 1000" in info.value.message
    await put(reactor, "127.0.0.1", "small", port=svc.bound_port, source=b"x" * 999)
