"""What the firmware tests take from Debian: installed packages (firmware,
QEMU, dnsmasq) and two packages fetched with ``apt-get download``
and unpacked with ``dpkg-deb -x``, never installed:

* a kernel, ``linux-image-cloud-amd64``'s current dependency (the cloud
  flavour: 27 MB to fetch instead of 71, and it has all these boots need
  built in: EFI stub, 8250 serial console, initramfs, ACPI power-off);
* ``busybox-static`` for the initrds (it conflicts with the ``busybox``
  package that tests/clients.py drives, so it is not installed).

Fetched packages are kept under ``.cache/debian`` in the repository
(``TXFBTFTP_FIRMWARE_CACHE`` overrides it): once there, no network is
needed.  A download is retried; when the package lists are missing, they are
updated once (as root) first.
"""
import contextlib
import fcntl
import glob
import os
import shutil
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("TXFBTFTP_FIRMWARE_CACHE") or os.path.join(REPO, ".cache", "debian")

KERNEL_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"

#: Files each boot needs, by the Debian package that ships them.
FILES = {
    "ovmf": ["/usr/share/ovmf/OVMF.fd"],
    "ipxe": ["/usr/lib/ipxe/snponly.efi"],
    "ipxe-qemu": ["/usr/lib/ipxe/qemu/efi-e1000.rom"],
    "seabios": ["/usr/share/seabios/bios-256k.bin"],
    "grub-efi-amd64-bin": ["/usr/lib/grub/x86_64-efi/modinfo.sh"],
    "grub-common": ["/usr/bin/grub-mknetdir"],
    "pxelinux": ["/usr/lib/PXELINUX/pxelinux.0"],
    "syslinux-common": ["/usr/lib/syslinux/modules/bios/ldlinux.c32"],
    "u-boot-qemu": ["/usr/lib/u-boot/qemu-x86_64/u-boot.rom"],
    "qemu-system-x86": ["/usr/bin/qemu-system-x86_64"],
    "dnsmasq-base": ["/usr/sbin/dnsmasq"],
    "iproute2": ["/usr/bin/ip", "/bin/ip", "/sbin/ip", "/usr/sbin/ip"],
}


class Unavailable(Exception):
    """Something a firmware test needs is missing; the message says what."""


def missing(packages):
    """The packages among ``packages`` whose files are not there."""
    out = []
    for pkg in packages:
        paths = FILES[pkg]
        found = any(os.path.exists(p) for p in paths) if pkg == "iproute2" else all(map(os.path.exists, paths))
        if not found:
            out.append(pkg)
    return out


def require(*packages):
    gone = missing(packages)
    if gone:
        raise Unavailable("Debian packages not installed: %s (apt-get install %s)" % (
            ", ".join(gone), " ".join(gone)))


def installed_version(package):
    res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None


def _apt(*argv, timeout=300, cwd=None):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          stdin=subprocess.DEVNULL, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def _candidate(package):
    """(name, version) of what ``apt-get download package`` would fetch; a
    metapackage (``linux-image-cloud-amd64``) is followed to the package it
    depends on."""
    name = package
    if package == KERNEL_PACKAGE:
        res = _apt("apt-cache", "depends", "--important", package)
        deps = [line.split(":", 1)[1].strip() for line in res.stdout.splitlines()
                if line.strip().startswith("Depends:") and "linux-image-" in line]
        if res.returncode != 0 or not deps:
            return None
        name = deps[0]
    res = _apt("apt-cache", "show", "--no-all-versions", name)
    for line in res.stdout.splitlines():
        if line.startswith("Version:"):
            return name, line.split(":", 1)[1].strip()
    return None


@contextlib.contextmanager
def _locked(path):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _cached(package):
    """What an earlier run unpacked for ``package``: (directory, name,
    version) of the newest, or None."""
    found = []
    for marker in glob.glob(os.path.join(CACHE, "*", ".complete")):
        with open(marker) as f:
            fields = f.read().split()
        if len(fields) == 3 and fields[0] == package:
            found.append((os.path.getmtime(marker), os.path.dirname(marker), fields[1], fields[2]))
    return max(found)[1:] if found else None


def _download(package, name, version, dest):
    """Fetch and unpack one version into ``dest``; an error message, or
    None when it worked."""
    work = tempfile.mkdtemp(dir=CACHE, prefix=".fetch-")
    try:
        res = _apt("apt-get", "download", "-q", "%s=%s" % (name, version), cwd=work, timeout=600)
        debs = glob.glob(os.path.join(work, "*.deb"))
        if res.returncode != 0 or len(debs) != 1:
            return "apt-get download %s=%s: exit %d: %s" % (
                name, version, res.returncode, (res.stderr or res.stdout).strip()[-500:])
        tree = os.path.join(work, "tree")
        res = subprocess.run(["dpkg-deb", "-x", debs[0], tree], capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            return "dpkg-deb -x %s: %s" % (debs[0], res.stderr.strip())
        if package == KERNEL_PACKAGE:  # only /boot is needed, not 100 MB of modules
            for sub in os.listdir(tree):
                if sub != "boot":
                    shutil.rmtree(os.path.join(tree, sub))
        with open(os.path.join(tree, ".complete"), "w") as f:
            f.write("%s %s %s\n" % (package, name, version))
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tree, dest)
        return None
    except subprocess.TimeoutExpired as exc:
        return "timed out: %s" % exc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch(package):
    """Unpack ``package`` (the version Debian offers now; for the kernel, the
    package its metapackage depends on) into the cache, downloading it the
    first time.  Returns (directory, package name, version).

    Tried four times; after the first failure the package lists are updated
    (as root), since missing or stale lists (a version the archive no longer
    has) are the usual cause.  Offline, what an earlier run fetched is used."""
    with _locked(CACHE):
        errors, updated = [], False
        for attempt in range(4):
            if attempt:
                time.sleep(3 * attempt)
            found = _candidate(package)
            if found is None:
                errors.append("apt knows no package %s" % package)
            else:
                name, version = found
                dest = os.path.join(CACHE, "%s_%s" % (name, version.replace(":", "%3a")))
                if os.path.exists(os.path.join(dest, ".complete")):
                    return dest, name, version
                error = _download(package, name, version, dest)
                if error is None:
                    return dest, name, version
                errors.append(error)
            if not updated and os.geteuid() == 0:
                updated = True
                res = _apt("apt-get", "update", "-qq", timeout=600)
                if res.returncode != 0:
                    errors.append("apt-get update: %s" % res.stderr.strip()[-500:])
        cached = _cached(package)
        if cached:
            return cached
        raise Unavailable("cannot fetch %s from Debian (%d tries):\n%s" % (
            package, len(errors), "\n".join(errors)))


def kernel():
    """(path of the kernel image, package name, version)."""
    tree, name, version = fetch(KERNEL_PACKAGE)
    images = sorted(glob.glob(os.path.join(tree, "boot", "vmlinuz-*")))
    if not images:
        raise Unavailable("%s %s holds no /boot/vmlinuz-*" % (name, version))
    return images[0], name, version


def busybox():
    """(path of the static busybox, package name, version)."""
    tree, name, version = fetch(BUSYBOX_PACKAGE)
    path = os.path.join(tree, "bin", "busybox")
    if not os.path.exists(path):
        raise Unavailable("%s %s holds no /bin/busybox" % (name, version))
    return path, name, version
