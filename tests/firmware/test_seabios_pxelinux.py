"""SeaBIOS with the NIC's iPXE PXE ROM loads PXELINUX, which tries its
per-MAC and per-IP configurations (each must fail cleanly with ERROR 1),
reads ``pxelinux.cfg/default`` and boots Linux with an initrd whose
``/init`` prints the sha256 of the payload inside it.

SeaBIOS copies the screen to the serial port (``etc/sercon-port``), so the
iPXE ROM's and PXELINUX's messages are on the console too.
"""
import os
import shutil

import pytest

from . import checks, images
from .conftest import need
from .lab import CLIENT, MAC

pytestmark = pytest.mark.firmware

PXELINUX = "/usr/lib/PXELINUX/pxelinux.0"
LDLINUX = "/usr/lib/syslinux/modules/bios/ldlinux.c32"
PAYLOAD = 8 << 20

CFG = """SAY txfbtftp: pxelinux.cfg/default
DEFAULT linux
PROMPT 0
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.cpio
  APPEND console=ttyS0,115200 panic=-1
"""


def tried_names():
    """What PXELINUX asks for before ``default``: the MAC with ARP type 01,
    then the IP address in hex, one digit shorter each time."""
    hexip = "".join("%02X" % int(o) for o in CLIENT.split("."))
    return ["pxelinux.cfg/01-" + MAC.replace(":", "-")] + ["pxelinux.cfg/" + hexip[:n] for n in range(8, 0, -1)]


@pytest.fixture(scope="module")
def root(tmp_path_factory, kernel, busybox):
    need("seabios", "ipxe-qemu", "pxelinux", "syslinux-common")
    d = tmp_path_factory.mktemp("pxelinux-root")
    shutil.copy(PXELINUX, d / "pxelinux.0")
    shutil.copy(LDLINUX, d / "ldlinux.c32")
    shutil.copy(kernel, d / "vmlinuz")
    (d / "pxelinux.cfg").mkdir()
    (d / "pxelinux.cfg" / "default").write_text(CFG)
    digest, payload = images.initrd(str(d / "initrd.cpio"), busybox, PAYLOAD)
    return d, digest, payload


@pytest.mark.parametrize("multihomed", [False, True], ids=["single-homed", "multi-homed"])
def test_seabios_ipxe_rom_pxelinux_linux(lab, root, multihomed):
    root, digest, payload = root
    lab = lab(multihomed)
    lab.serve(root)
    lab.dhcp("dhcp-boot=pxelinux.0,,%s" % lab.server_addr)
    lab.capture()
    lab.boot(*lab.sercon(), memory=512, nic="e1000")
    lab.expect(r"PXELINUX \d", 90, "PXELINUX")
    lab.expect(r"txfbtftp: pxelinux\.cfg/default", 60, "default")
    packets = checks.linux_proof(lab, digest, payload)
    names = [t.path for t in checks.transfers(packets) if t.path.startswith("pxelinux.cfg/")]
    lab.check(names == tried_names() + ["pxelinux.cfg/default"],
              "PXELINUX asked for %s" % names)
    for name in tried_names():
        checks.not_found(lab, name)
    for path in ("ldlinux.c32", "pxelinux.cfg/default", "vmlinuz", "initrd.cpio"):
        t = checks.named(lab, packets, path)[-1]
        lab.check(t.requested == {"tsize": "0", "blksize": "1408"}, "PXELINUX asked %s for %s" % (t.requested, path))
        checks.record(lab, path)
    loader = checks.named(lab, packets, "pxelinux.0")[-1]
    lab.check(loader.requested.get("blksize") == "1432", "the iPXE ROM asked %s" % loader.requested)
    rec = checks.record(lab, "initrd.cpio")
    lab.check(rec.get("bytes_transferred") == os.path.getsize(root / "initrd.cpio"), "server: %s" % rec.get("text"))
