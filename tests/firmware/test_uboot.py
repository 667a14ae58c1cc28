"""U-Boot (Debian's qemu-x86_64 build, e1000) driven over its serial
console: ``dhcp``, then ``tftpboot`` of a file past block 65535 and
``crc32`` of what arrived, once with the default settings and once with
``tftpblocksize 1468`` and ``tftpwindowsize 8`` (the window then crosses
the block-number wrap).

Debian's build has ``crc32`` but no ``hash`` command.  The two loads go to
different addresses, so the second checksum cannot be the first load's.
"""
import re
import zlib

import pytest

from . import checks, images
from .conftest import need

pytestmark = pytest.mark.firmware

UBOOT = "/usr/lib/u-boot/qemu-x86_64/u-boot.rom"
BLKSIZE = 1468
SIZE = (checks.ROLLOVER + 16) * BLKSIZE
FIRST_LOAD, SECOND_LOAD = 0x2000000, 0x8000000  # RAM is 512 MiB; U-Boot sits at the top


@pytest.fixture(scope="module")
def root(tmp_path_factory, host):
    need("u-boot-qemu")
    d = tmp_path_factory.mktemp("uboot-root")
    images.random_file(str(d / "big.bin"), SIZE)
    crc = 0
    with open(d / "big.bin", "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return d, "%08x" % crc


def command(lab, line, timeout=30):
    """Type ``line`` at the U-Boot prompt; what it printed before the next
    prompt."""
    lab.console.send(line + "\n")
    m = lab.expect(r"(?ms)%s\n(.*?)^=> " % re.escape(line), timeout, line.split()[0])
    return m.group(1)


@pytest.mark.parametrize("multihomed", [False, True], ids=["single-homed", "multi-homed"])
def test_uboot_dhcp_tftpboot_crc32_default_and_windowed(lab, root, multihomed):
    root, crc = root
    lab = lab(multihomed)
    lab.serve(root)
    lab.dhcp("dhcp-boot=big.bin,,%s" % lab.server_addr)
    lab.capture()
    lab.boot("-bios", UBOOT, memory=512, nic="e1000")
    lab.expect(r"Hit any key to stop autoboot", 60, "U-Boot")
    lab.console.send("\n")
    lab.expect(r"(?m)^=> ", 30, "prompt")
    command(lab, "setenv autoload no")
    out = command(lab, "dhcp", 60)
    lab.check("DHCP client bound to address" in out, "dhcp failed:\n%s" % out)
    out = command(lab, "echo server=${serverip}")
    lab.check("server=%s" % lab.server_addr in out, "U-Boot's serverip after DHCP: %s" % out)
    results = []
    for addr, settings in ((FIRST_LOAD, ()), (SECOND_LOAD, ("setenv tftpblocksize %d" % BLKSIZE,
                                                             "setenv tftpwindowsize 8"))):
        for line in settings:
            command(lab, line)
        out = command(lab, "tftpboot 0x%x big.bin" % addr, 120)
        lab.check("Bytes transferred = %d " % SIZE in out, "tftpboot failed:\n%s" % out)
        out = command(lab, "crc32 ${fileaddr} ${filesize}", 60)
        m = re.search(r"crc32 for ([0-9a-f]+) \.\.\. ([0-9a-f]+) ==> ([0-9a-f]{8})", out)
        lab.check(m and int(m.group(1), 16) == addr and int(m.group(2), 16) == addr + SIZE - 1,
                  "crc32 did not cover the load: %s" % out)
        results.append(m.group(3))
    lab.console.send("reset\n")  # QEMU runs with -no-reboot: it exits
    lab.powered_off()
    packets = lab.stop_capture()

    lab.check(results == [crc, crc], "U-Boot's crc32 %s, the file's %s" % (results, crc))
    checks.network(lab, packets)
    default, windowed = checks.named(lab, packets, "big.bin")[-2:]
    lab.check(default.requested == {"timeout": "5", "tsize": "0", "blksize": str(BLKSIZE)},
              "U-Boot's default request: %s" % default.requested)
    lab.check(windowed.requested == {"timeout": "5", "tsize": "0", "blksize": str(BLKSIZE), "windowsize": "8"},
              "U-Boot's request with tftpwindowsize 8: %s" % windowed.requested)
    lab.check(windowed.acknowledged.get("windowsize") == "8", "OACK: %s" % windowed.acknowledged)
    for t in (default, windowed):
        checks.rollover(lab, t, SIZE)
    recs = [s for s in lab.sessions() if s.get("path") == "big.bin"]
    lab.check([(r.get("outcome"), r.get("windowsize"), r.get("bytes_transferred")) for r in recs] ==
              [("ok", 1, SIZE), ("ok", 8, SIZE)], "server: %s" % [r.get("text") for r in recs])
