import pytest

from txfbtftp._protocol import packet


def test_request_roundtrip_keeps_option_order_and_spelling():
    raw = packet.request(packet.RRQ, "pxelinux.0", "OCTET", {"TSize": "0", "blksize": "1468"})
    req = packet.parse_request(raw)
    assert req.is_read and req.filename == "pxelinux.0" and req.mode == "octet"
    assert list(req.options.items()) == [("tsize", "0"), ("blksize", "1468")]
    assert req.option_names["tsize"] == "TSize"
    assert req.raw == raw


def test_first_of_repeated_options_wins_and_dangling_name_is_ignored():
    raw = b"\x00\x01f\x00octet\x00blksize\x00512\x00BLKSIZE\x001024\x00tsize\x00"
    req = packet.parse_request(raw)
    assert req.options == {"blksize": "512"}


@pytest.mark.parametrize("raw", [
    b"", b"\x00", b"\x00\x01", b"\x00\x01file", b"\x00\x01file\x00", b"\x00\x01\x00octet\x00",
    b"\x00\x03\x00\x01", b"\x00\x02file\x00octet",
])
def test_malformed_requests(raw):
    with pytest.raises(packet.MalformedPacket):
        packet.parse_request(raw)


def test_filenames_with_invalid_utf8_survive():
    req = packet.parse_request(b"\x00\x01caf\xe9\x00octet\x00")
    assert req.filename.encode("utf-8", "surrogateescape") == b"caf\xe9"


def test_data_ack_error_oack_bytes():
    assert packet.data(1, b"abc") == b"\x00\x03\x00\x01abc"
    assert packet.data(65535, b"") == b"\x00\x03\xff\xff"
    assert packet.ack(258) == b"\x00\x04\x01\x02"
    assert packet.error(1, "File not found") == b"\x00\x05\x00\x01File not found\x00"
    assert packet.oack({"blksize": "1468", "tsize": "10"}) == b"\x00\x06blksize\x001468\x00tsize\x0010\x00"
    assert packet.parse_oack(packet.oack({"BlkSize": "8"})) == {"blksize": "8"}


def test_parse_error():
    err = packet.parse_error(b"\x00\x05\x00\x08User aborted\x00")
    assert (err.code, err.message) == (8, "User aborted")
    assert packet.parse_error(b"\x00\x05\x00\x00").message == ""
    with pytest.raises(packet.MalformedPacket):
        packet.parse_error(b"\x00\x05\x00")


def test_opcode_of():
    assert packet.opcode_of(b"\x00\x04\x00\x01") == 4
    assert packet.opcode_of(b"\x00") is None
