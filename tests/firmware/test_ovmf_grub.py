"""OVMF's UEFI PXE loads GRUB's network image (``grub-mknetdir``), whose
``grub.cfg`` has GRUB's own TFTP client read a file past block 65535 and
print its sha256 (``hashsum``) on the console.

Before that, ``hexdump --length=32`` reads the head of the same file and
closes it: GRUB then ends the transfer with ERROR 0 "closed", which the
server must take as the end of the session; the 32 bytes GRUB shows are
checked too.
"""
import re
import subprocess

import pytest

from . import checks, images
from .conftest import need

pytestmark = pytest.mark.firmware

OVMF = "/usr/share/ovmf/OVMF.fd"
GRUB_BLKSIZE = 1024
SIZE = (checks.ROLLOVER + 16) * GRUB_BLKSIZE

CFG = """echo "txfbtftp: grub.cfg from $root"
hexdump --length=32 /big.bin
hashsum --hash sha256 /big.bin
echo "txfbtftp: grub done"
halt
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory, host):
    need("ovmf", "grub-efi-amd64-bin", "grub-common")
    d = tmp_path_factory.mktemp("grub-root")
    res = subprocess.run(["grub-mknetdir", "--net-directory=%s" % d, "--subdir=boot/grub",
                          "-d", "/usr/lib/grub/x86_64-efi"], capture_output=True, text=True)
    assert res.returncode == 0, "grub-mknetdir failed: %s" % res.stderr
    (d / "boot" / "grub" / "grub.cfg").write_text(CFG)
    digest = images.random_file(str(d / "big.bin"), SIZE)
    with open(d / "big.bin", "rb") as f:
        head = f.read(32)
    return d, digest, head


@pytest.mark.parametrize("multihomed", [False, True], ids=["single-homed", "multi-homed"])
def test_ovmf_pxe_grub_hashsum_past_rollover(lab, root, multihomed):
    root, digest, head = root
    lab = lab(multihomed)
    lab.serve(root)
    lab.dhcp("dhcp-boot=boot/grub/x86_64-efi/core.efi,,%s" % lab.server_addr)
    lab.capture()
    lab.boot("-bios", OVMF, memory=1024, nic="virtio-net-pci", romfile="")
    lab.expect(r"NBP file downloaded successfully", 90, "UEFI PXE")
    lab.expect(r"txfbtftp: grub\.cfg from tftp,%s\n" % re.escape(lab.server_addr), 60, "grub.cfg")
    dump = lab.expect(r"00000000  ((?:[0-9a-f]{2} {1,2}){16}).*\n00000010  ((?:[0-9a-f]{2} {1,2}){16})",
                      30, "hexdump")
    sums = lab.expect(r"([0-9a-f]{64})  /big\.bin", 120, "hashsum")
    lab.expect(r"txfbtftp: grub done", 30, "done")
    lab.powered_off()
    packets = lab.stop_capture()

    shown = bytes.fromhex((dump.group(1) + dump.group(2)).replace(" ", ""))
    lab.check(shown == head, "GRUB's hexdump shows %s, the file starts %s" % (shown.hex(), head.hex()))
    lab.check(sums.group(1) == digest, "GRUB's sha256 %s, the file's %s" % (sums.group(1), digest))
    checks.network(lab, packets)
    checks.edk2_tsize_probe(lab, packets, "boot/grub/x86_64-efi/core.efi")
    partial, whole = checks.named(lab, packets, "/big.bin")[-2:]
    for t in (partial, whole):
        lab.check(t.requested == {"blksize": str(GRUB_BLKSIZE), "tsize": "0"},
                  "GRUB asked for %s" % t.requested)
    lab.check(partial.errors("client") == [(0, "closed")],
              "GRUB's early close sent %s, not ERROR 0 'closed'" % partial.errors("client"))
    early = checks.record(lab, "/big.bin", outcome="client-error", index=-2)
    lab.check(early.get("error_code") == 0, "server: %s" % early.get("text"))
    checks.rollover(lab, whole, SIZE)
    rec = checks.record(lab, "/big.bin")
    lab.check(rec.get("bytes_transferred") == SIZE, "server: %s" % rec.get("text"))
    # GRUB looks for per-MAC and per-IP configurations first
    checks.not_found(lab, "/boot/grub/grub.cfg-01-52-54-00-4f-00-64")
    checks.not_found(lab, "/boot/grub/grub.cfg-0A4F0064")
