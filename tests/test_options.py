import pytest

from txfbtftp._protocol import errors, packet
from txfbtftp._protocol.options import Limits, negotiate


def req(op=packet.RRQ, mode="octet", **opts):
    return packet.parse_request(packet.request(op, "f", mode, {k: str(v) for k, v in opts.items()}))


def test_no_options_no_oack():
    n = negotiate(req(), Limits(), 100)
    assert (n.blksize, n.windowsize, n.accepted) == (512, 1, {})


def test_unknown_options_ignored_and_only_accepted_echoed():
    n = negotiate(req(blksize=1468, foo="bar", multicast=""), Limits(), None)
    assert n.accepted == {"blksize": "1468"}


@pytest.mark.parametrize("value,granted", [
    ("8", "8"), ("1468", "1468"), ("65464", "65464"), ("70000", "65464"),
    ("7", None), ("0", None), ("-5", None), ("abc", None), ("", None), ("1e3", None),
])
def test_blksize(value, granted):
    n = negotiate(req(blksize=value), Limits(), None)
    assert n.accepted.get("blksize") == granted
    assert n.blksize == (int(granted) if granted else 512)


def test_blksize_clamped_to_configured_maximum():
    assert negotiate(req(blksize=9000), Limits(max_blksize=1468), None).accepted == {"blksize": "1468"}


def test_windowsize_clamped_and_invalid_ignored():
    assert negotiate(req(windowsize=100), Limits(max_windowsize=16), None).windowsize == 16
    assert negotiate(req(windowsize=0), Limits(), None).accepted == {}
    assert negotiate(req(windowsize="x"), Limits(), None).accepted == {}


def test_timeout_and_utimeout():
    assert negotiate(req(timeout=5), Limits(), None).timeout == 5.0
    assert negotiate(req(timeout=0), Limits(), None).accepted == {}
    assert negotiate(req(timeout=256), Limits(), None).accepted == {}
    n = negotiate(req(utimeout=20000), Limits(), None)
    assert n.timeout == 0.02 and n.accepted == {"utimeout": "20000"}
    assert negotiate(req(utimeout=5), Limits(), None).accepted == {}


def test_tsize_on_read_reports_the_real_size_only_when_known():
    assert negotiate(req(tsize=0), Limits(), 12345).accepted == {"tsize": "12345"}
    assert negotiate(req(tsize=0), Limits(), None).accepted == {}


def test_tsize_on_write_checked_against_the_upload_limit():
    n = negotiate(req(packet.WRQ, tsize=1000), Limits(max_upload_size=1000), None)
    assert n.tsize == 1000 and n.accepted == {"tsize": "1000"}
    with pytest.raises(errors.DiskFull):
        negotiate(req(packet.WRQ, tsize=1001), Limits(max_upload_size=1000), None)


def test_rollover():
    assert negotiate(req(rollover=1), Limits(), None).rollover == 1
    assert negotiate(req(rollover=2), Limits(), None).accepted == {}


def test_names_are_case_insensitive_and_echoed_as_sent():
    n = negotiate(req(BLKSIZE=1024, TSize=0), Limits(), 7)
    assert n.accepted == {"BLKSIZE": "1024", "TSize": "7"}
    assert n.blksize == 1024


def test_limits_validate():
    with pytest.raises(ValueError):
        Limits(max_blksize=7)
    with pytest.raises(ValueError):
        Limits(max_windowsize=0)


@pytest.mark.parametrize("value", ["\u00b2", "1" * 5000, "\u0661\u0662"])
def test_odd_digits_are_ignored_not_fatal(value):
    assert negotiate(req(blksize=value, windowsize=value, timeout=value), Limits(), None).accepted == {}


def test_windows_stay_within_half_the_block_number_space():
    with pytest.raises(ValueError):
        Limits(max_windowsize=32768)
    wide = Limits(max_windowsize=32767, max_window_bytes=1 << 30)
    assert negotiate(req(windowsize=65535), wide, None).windowsize == 32767


def test_a_window_is_capped_in_bytes():
    """windowsize x blksize at most max_window_bytes (128 KiB by default): the
    windowsize is negotiated down, never below 1, and the OACK says so."""
    n = negotiate(req(windowsize=64, blksize=65464), Limits(), None)
    assert (n.blksize, n.windowsize, n.accepted) == (65464, 2, {"windowsize": "2", "blksize": "65464"})
    assert negotiate(req(windowsize=64, blksize=1468), Limits(), None).windowsize == 64  # U-Boot's largest
    assert negotiate(req(windowsize=8), Limits(max_window_bytes=1000), None).windowsize == 1
