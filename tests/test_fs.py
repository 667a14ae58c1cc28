"""The filesystem backend on its own."""
import errno
import os

import pytest

from txfbtftp._protocol import errors
from txfbtftp import FilesystemBackend
from txfbtftp._backends.fs import FileReader
from txfbtftp import TransferRequest

REQ = TransferRequest(path="x", client=("127.0.0.1", 1), local=("127.0.0.1", 69), mode="octet")


def test_root_slash_serves_files():
    assert FilesystemBackend("/").resolve("etc/hostname") == "/etc/hostname"


def test_shared_descriptor_and_read_ahead(tmp_path):
    data = os.urandom(100_000)
    (tmp_path / "f").write_bytes(data)
    fs = FilesystemBackend(str(tmp_path))
    r1, r2 = fs.get_reader("f", REQ), fs.get_reader("/f", REQ)
    assert r1._fd == r2._fd and len(fs._open) == 1
    out = []
    while True:
        block = r1.read(1468)
        out.append(block)
        if len(block) < 1468:
            break
    assert b"".join(out) == data
    r1.close()
    r1.close()
    assert len(fs._open) == 1
    r2.close()
    assert fs._open == {}


@pytest.mark.parametrize("options, crowd, ahead", [
    ({}, 0, 8), ({}, 1000, 8), ({}, 2000, 5), ({}, 4000, 2), ({}, 10000, 1), ({"windowsize": "4"}, 0, 4),
    ({"windowsize": "4"}, 30000, 4), ({"windowsize": "64"}, 30000, 8), ({"windowsize": "x"}, 30000, 1)])
def test_read_ahead_follows_the_window_and_the_crowd(tmp_path, monkeypatch, options, crowd, ahead):
    data = os.urandom(20 * 1468 + 5)
    (tmp_path / "f").write_bytes(data)
    fs = FilesystemBackend(str(tmp_path))
    request = TransferRequest(path="f", client=("127.0.0.1", 1), local=("127.0.0.1", 69), mode="octet",
                              options=options)
    fs.readers += crowd - 1  # as many readers open, this one included
    reader = fs.get_reader("f", request)
    calls = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: calls.append(n) or real(fd, n, off))
    out = [reader.read(1468) for _ in range(21)]
    assert b"".join(out) == data and len(out[-1]) == 5
    assert calls[0] == 1468 * ahead and len(calls) <= -(-21 // ahead) + 1
    if ahead == 1:
        assert reader._buf == b""  # lock-step in a crowd: nothing held between blocks
    assert FileReader.BUDGET == 16 << 20
    reader.close()
    assert fs.readers == crowd - 1 and fs._open == {}


def test_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(errors.AccessViolation):
        FilesystemBackend(str(tmp_path)).get_reader("pipe", REQ)


def test_abort_after_disk_full_still_removes_the_temporary_file(tmp_path):
    fs = FilesystemBackend(str(tmp_path), writable=True)
    w = fs.get_writer("up.bin", REQ)

    class Full:
        closed = False

        def write(self, data=b""):
            raise OSError(errno.ENOSPC, "No space left on device")

        close = flush = write

    w._file.close()
    w._file = Full()
    with pytest.raises(errors.DiskFull):
        w.write(b"x")
    w.abort()
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_and_create_only_refuses(tmp_path):
    (tmp_path / "f").write_bytes(b"old")
    with pytest.raises(errors.FileExists):
        FilesystemBackend(str(tmp_path), writable=True).get_writer("f", REQ)
    w = FilesystemBackend(str(tmp_path), writable=True, overwrite=True).get_writer("f", REQ)
    w.write(b"new")
    assert (tmp_path / "f").read_bytes() == b"old"
    w.commit()
    assert (tmp_path / "f").read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["f"]


@pytest.mark.parametrize("length", [240, 241, 255])
def test_an_upload_may_have_the_longest_name_the_file_system_takes(tmp_path, length):
    """The temporary file beside it carries 15 more bytes: its name is cut, not the upload refused."""
    name = "n" * (length - 2) + "é"  # two bytes in UTF-8
    w = FilesystemBackend(str(tmp_path), writable=True).get_writer(name, REQ)
    w.write(b"data")
    w.commit()
    assert (tmp_path / name).read_bytes() == b"data" and os.listdir(tmp_path) == [name]
