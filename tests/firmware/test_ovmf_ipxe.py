"""OVMF's UEFI PXE loads iPXE's ``snponly.efi``, which runs an iPXE script
that boots Linux with an initrd past block 65535.

Chain: OVMF (EDK2 PXE base code, virtio-net without an option ROM, so the
TFTP client is EDK2's own) -> ``snponly.efi`` -> ``boot.ipxe`` -> ``vmlinuz``
+ ``big.cpio``.  iPXE asks for blksize 1432, so ``big.cpio`` is sized just
past 65535 blocks of 1432 bytes (about 94 MB): its block numbers wrap.

Debian's iPXE has no checksum command (no ``sha1sum``/``md5sum``, built
without DIGEST_CMD), so the proof comes from what iPXE loaded: the kernel
unpacks the initrd iPXE fetched and its ``/init`` prints the sha256 of the
payload that fills it (tests/firmware/images.py).
"""
import os
import re
import shutil

import pytest

from . import checks, images
from .conftest import need

pytestmark = pytest.mark.firmware

OVMF = "/usr/share/ovmf/OVMF.fd"
SNPONLY = "/usr/lib/ipxe/snponly.efi"
IPXE_BLKSIZE = 1432
SIZE = (checks.ROLLOVER + 16) * IPXE_BLKSIZE  # 16 blocks past the wrap

SCRIPT = """#!ipxe
echo txfbtftp: iPXE script from ${next-server}
kernel vmlinuz initrd=big.cpio console=ttyS0,115200 panic=-1
initrd big.cpio
boot
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory, kernel, busybox):
    need("ovmf", "ipxe")
    d = tmp_path_factory.mktemp("ipxe-root")
    shutil.copy(SNPONLY, d / "snponly.efi")
    shutil.copy(kernel, d / "vmlinuz")
    (d / "boot.ipxe").write_text(SCRIPT)
    digest, payload = images.initrd(str(d / "big.cpio"), busybox, total_size=SIZE)
    return d, digest, payload, os.path.getsize(d / "big.cpio")


@pytest.mark.parametrize("multihomed", [False, True], ids=["single-homed", "multi-homed"])
def test_ovmf_pxe_ipxe_script_linux_initrd_past_rollover(lab, root, multihomed):
    root, digest, payload, size = root
    lab = lab(multihomed)
    lab.serve(root)
    # iPXE says who it is in the user class: it gets the script, the firmware gets iPXE
    lab.dhcp("dhcp-userclass=set:ipxe,iPXE",
             "dhcp-boot=tag:ipxe,boot.ipxe,,%s" % lab.server_addr,
             "dhcp-boot=tag:!ipxe,snponly.efi,,%s" % lab.server_addr)
    lab.capture()
    lab.boot("-bios", OVMF, memory=1024, nic="virtio-net-pci", romfile="")
    lab.expect(r"NBP file downloaded successfully", 90, "UEFI PXE")
    lab.expect(r"txfbtftp: iPXE script from %s\n" % re.escape(lab.server_addr), 90, "iPXE script")
    packets = checks.linux_proof(lab, digest, payload)
    checks.edk2_tsize_probe(lab, packets, "snponly.efi")
    big = checks.named(lab, packets, "big.cpio")[-1]
    lab.check(big.requested.get("blksize") == str(IPXE_BLKSIZE),
              "iPXE asked for %s, not blksize %d" % (big.requested, IPXE_BLKSIZE))
    checks.rollover(lab, big, size)
    rec = checks.record(lab, "big.cpio")
    lab.check(rec.get("blksize") == IPXE_BLKSIZE and rec.get("bytes_transferred") == size,
              "server: %s" % rec.get("text"))
