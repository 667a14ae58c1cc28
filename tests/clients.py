"""Drive real TFTP client programs as subprocesses, for end-to-end tests.

This module knows how to run four stock TFTP clients against a server
(normally ours, on loopback) and hands back a uniform :class:`Result`:

=========  ==============================================================
name       program
=========  ==============================================================
curl       ``curl`` (needs ``tftp`` in ``curl --version`` "Protocols")
tftp-hpa   ``tftp`` from tftp-hpa (``tftp -V`` starts with ``tftp-hpa``)
atftp      ``atftp`` (windowsize needs atftp >= 0.8)
busybox    ``busybox tftp`` (applet must be compiled in; ``-b`` optional)
=========  ==============================================================

Typical use from a test::

    from tests import clients      # or however tests/ is importable

    def test_download(server, tmp_path):
        try:
            res = clients.download("atftp", "127.0.0.1", server.port,
                                   "big.bin", tmp_path / "big.bin",
                                   blksize=1468, windowsize=4)
        except clients.Unsupported as exc:
            pytest.skip(str(exc))
        res.check()                     # AssertionError with full details
        assert (tmp_path / "big.bin").read_bytes() == expected

    def test_missing(server, tmp_path):
        res = clients.download("busybox", "::1", server.port, "nope",
                               tmp_path / "x")
        assert not res.ok
        assert clients.server_error(res).code == 1

:class:`Unsupported` is raised *before* anything is run when the client is
not installed (:class:`ClientUnavailable`, a subclass) or cannot do what was
asked (e.g. curl with ``windowsize``, tftp-hpa with ``blksize``).  Invalid
argument values (bad mode, contradictory flags) raise :class:`ValueError`.

What each client can do (checked against tftpd-hpa 5.2 and by capturing the
request packets; Debian bookworm: curl 7.88.1, tftp-hpa 5.2, atftp 0.8.0,
BusyBox 1.35.0):

==========  =========  ==========  ============  ======  =====  ==============
client      blksize    windowsize  netascii      upload  IPv6   tsize
==========  =========  ==========  ============  ======  =====  ==============
curl        yes [1]    no          raw only [2]  yes     yes    always [3]
tftp-hpa    no [4]     no          yes           yes     yes    never
atftp       yes        yes [7]     yes           yes     yes    opt-in [5]
busybox     yes [6]    no          no            yes     yes    always
==========  =========  ==========  ============  ======  =====  ==============

[1] curl always sends ``blksize`` (``512`` unless ``--tftp-blksize``), plus
    ``tsize`` and ``timeout`` (derived from ``--max-time``: 6 by default,
    5 for ``-m 30``..``200``, 1 for ``-m 3``).  ``--tftp-no-options`` makes a
    bare RFC 1350 request and silently ignores ``--tftp-blksize``.  curl
    rejects ``--tftp-blksize`` outside 8..65464 locally (exit 71, nothing
    sent).
[2] ``;mode=netascii`` in the URL only changes the mode string on the wire:
    curl does *no* CRLF / CR-NUL translation either way, so a download
    yields the wire form and an upload sends the local bytes verbatim.  This
    module therefore raises :class:`Unsupported` for curl netascii unless
    ``allow_untranslated=True`` is passed.  Note that tftpd-hpa refuses
    ``tsize`` with netascii (ERROR 8), which curl always sends; use
    ``tsize=False`` (= ``--tftp-no-options``) against such servers.
[3] ``tsize 0`` on RRQ, ``tsize <file size>`` on WRQ; only
    ``--tftp-no-options`` (``tsize=False`` / ``no_options=True`` here)
    turns it off, together with blksize and timeout.
[4] tftp-hpa 5.2's client never sends any RFC 2347 option; it has no
    ``blksize`` command at all (interactive ``?`` lists none).
[5] ``--option "tsize enable"``.  Quirk: on an RRQ atftp 0.8 sends the
    literal value ``enable`` (``tsize\\0enable\\0``) instead of ``0``; on a
    WRQ it sends the real file size.  Off by default.
[6] only if the applet was built with blocksize support (``-b`` in
    ``busybox tftp --help``; yes on Debian).  ``-b 512`` sends *no* blksize
    option (512 is the default).  busybox always sends ``tsize``
    (``0`` on RRQ, the size on WRQ) and cannot be told not to.
[7] atftp >= 0.8.  Downloads with windowsize are solid.  Upload quirk: if
    retransmissions happen near the end of a windowed WRQ (seen on loopback
    with blksize 65464 + windowsize 4, when the receiver's socket buffer
    overflows), atftp may send an extra *zero-length* DATA block N+1 after
    the final short block N was ACKed, wait for its ACK, time out (~30 s)
    and exit 255 although the server has the complete file.

How each client reports failure (see also :func:`server_error`):

* curl: exit status 68 (ERROR 1), 69 (2), 70 (3), 71 (0 or 4, also local
  blksize validation), 72 (5), 73 (6), 74 (7), 42 (8 and unknown codes),
  28 on timeout (also when nothing listens: ICMP port unreachable is *not*
  treated as fatal), 26 if the upload source cannot be read.  The
  ``curl: (NN) ...`` message on stderr is unreliable in 7.88 (always
  "getpeername() failed with errno 107"), so this module runs curl with
  ``-v``; the server's message then appears as ``* TFTP error: <msg>``.
* tftp-hpa: exit status is **0** even after an ERROR packet or a local
  file error; only a timeout ("Transfer timed out.", ~25 s) exits with 69.
  The module runs it with ``-v`` and rewrites ``returncode`` to
  :data:`TFTP_HPA_FAILURE` (1) when the output shows a failure
  (``Error code N: msg``, ``Transfer timed out.``, ``tftp: <path>: <errno
  text>`` on stderr, ...); ``raw_returncode`` keeps the real status and
  ``note`` says why.  The verbose "Received N bytes in ..." / "Sent N
  bytes in ..." line is useless as a success marker: it is missing for
  zero-byte transfers and still printed after an ERROR ended a transfer.
  After receiving an ERROR during a download tftp-hpa *sends an ACK* (for
  the block it was waiting for, i.e. last block + 1) back to the error's
  sender - servers must tolerate that stray ACK.
* atftp: exit status 255 on any failure (server ERROR, timeout, local file
  problem).  stderr: ``tftp: error received from server <msg>`` (the code
  is not shown), ``timeout: retrying ...`` x6 then ``tftp: aborting``
  (``--tftp-timeout`` is the per-retransmission delay, default 5 s, so ~30 s
  total).  ``Option name = value`` lines on stderr echo requested options.
* busybox: exit status 1 on any failure; stderr ``tftp: server error: (N)
  msg``, or ``tftp: timeout`` (~13 s).

Other quirks:

* curl 7.88 rejects ``tsize 0`` in an OACK ("invalid tsize -:0:- value in
  OACK packet", exit 71), so downloading an *empty* file with curl fails
  against any server that answers tsize; ``tsize=False`` works around it.
* tftp-hpa and atftp translate netascii properly both ways (LF <-> CR LF,
  CR <-> CR NUL on the wire); curl sends/keeps the bytes verbatim.
* On a failed download tftp-hpa and atftp leave an empty (or partial) local
  file behind; curl and busybox did not create one in the missing-file case.
* tftp-hpa treats ``host:file`` in file names specially unless in literal
  mode; this module always passes ``-l``.  IPv6 literals are passed with
  ``-6``.
* curl: the remote name is percent-encoded into the URL (``;`` ``#`` ``?``
  space ...), a leading ``/`` is kept (``tftp://h:p//abs`` requests
  ``/abs``), ``-g`` disables URL globbing (``[::1]``) and ``-q`` ignores any
  ``~/.curlrc``.  curl gets ``--max-time`` slightly below ``timeout`` so it
  normally exits on its own (status 28) before the hard kill.
* The other clients' own give-up times (tftp-hpa ~25 s, atftp ~30 s, busybox
  ~13 s) are below the default ``timeout`` of 60 s.

Every run has a hard wall-clock limit: the client is started in its own
session and, if still running after ``timeout`` seconds, its whole process
group is SIGKILLed; the :class:`Result` then has ``returncode ==
TIMEOUT_RETURNCODE`` (-9), ``timed_out == True`` and an explanatory
``note``.  stdin is always ``/dev/null`` so an interactive prompt can never
block, and ``LC_ALL=C`` keeps messages parseable.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import urllib.parse
from typing import Union
from collections.abc import Callable, Sequence

__all__ = [
    "CLIENTS",
    "TIMEOUT_RETURNCODE",
    "TFTP_HPA_FAILURE",
    "Unsupported",
    "ClientUnavailable",
    "Capabilities",
    "Result",
    "ServerError",
    "available",
    "capabilities",
    "require",
    "build_command",
    "run",
    "download",
    "upload",
    "server_error",
    "error_reported",
    "curl_download",
    "curl_upload",
    "tftp_hpa_download",
    "tftp_hpa_upload",
    "atftp_download",
    "atftp_upload",
    "busybox_download",
    "busybox_upload",
]

#: Client names accepted everywhere in this module.
CLIENTS = ("curl", "tftp-hpa", "atftp", "busybox")

#: ``Result.returncode`` when the client had to be killed after ``timeout``.
TIMEOUT_RETURNCODE = -9

#: ``Result.returncode`` substituted when tftp-hpa exited 0 but failed.
TFTP_HPA_FAILURE = 1

#: Extra seconds curl's ``--max-time`` stays below the hard ``timeout``.
_CURL_MARGIN = 1.0

#: Executables; tests may monkeypatch these (then call
#: ``capabilities.cache_clear()``).
BINARIES = {
    "curl": "curl",
    "tftp-hpa": "tftp",
    "atftp": "atftp",
    "busybox": "busybox",
}

PathLike = Union[str, "os.PathLike[str]"]


class Unsupported(Exception):
    """The client cannot do what was asked; a test should skip, not fail."""


class ClientUnavailable(Unsupported):
    """The client program is not installed (or lacks TFTP support)."""


# --------------------------------------------------------------------------
# Capabilities
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What one client can do, probed from the installed program.

    ``tsize`` is one of ``"always"`` (sent on every request unless all
    options are disabled), ``"optional"`` (off by default, can be
    requested), ``"never"``.
    """

    name: str
    installed: bool
    path: str | None = None
    version: str = ""
    download: bool = False
    upload: bool = False
    blksize: bool = False
    windowsize: bool = False
    netascii: bool = False  # translating netascii (LF <-> CRLF, CR <-> CR NUL)
    raw_netascii: bool = False  # can request mode netascii without translating
    ipv6: bool = False
    tsize: str = "never"
    can_disable_options: bool = False  # can make a bare RFC 1350 request
    why: str = ""  # reason when not installed


def _probe(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=10,
            env=_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.decode("utf-8", "replace")


@functools.cache
def capabilities(client: str) -> Capabilities:
    """Probe (once, cached) what *client* supports; never raises for a
    missing program, only for an unknown name."""
    _check_name(client)
    path = shutil.which(BINARIES[client])
    if path is None:
        return Capabilities(client, False, why=f"{BINARIES[client]!r} not found on PATH")

    if client == "curl":
        out = _probe([path, "--version"])
        protos = next((line for line in out.splitlines() if line.startswith("Protocols:")), "")
        if "tftp" not in protos.split():
            return Capabilities(client, False, path, why="curl built without tftp")
        return Capabilities(
            client, True, path, out.splitlines()[0] if out else "",
            download=True, upload=True, blksize=True, windowsize=False,
            netascii=False, raw_netascii=True, ipv6=True, tsize="always",
            can_disable_options=True,
        )

    if client == "tftp-hpa":
        out = _probe([path, "-V"]).strip()
        if not out.startswith("tftp-hpa"):
            return Capabilities(client, False, path,
                                why=f"{path} is not tftp-hpa ({out[:60]!r})")
        return Capabilities(
            client, True, path, out, download=True, upload=True,
            blksize=False, windowsize=False, netascii=True, ipv6=True,
            tsize="never", can_disable_options=True,
        )

    if client == "atftp":
        out = _probe([path, "--version"]).strip()
        m = re.search(r"atftp-(\d+)\.(\d+)", out)
        if not m:
            return Capabilities(client, False, path,
                                why=f"cannot identify atftp ({out[:60]!r})")
        ver = (int(m.group(1)), int(m.group(2)))
        return Capabilities(
            client, True, path, out, download=True, upload=True,
            blksize=True, windowsize=ver >= (0, 8), netascii=True, ipv6=True,
            tsize="optional", can_disable_options=True,
        )

    # busybox
    out = _probe([path, "tftp", "--help"])
    if "Usage: tftp" not in out:
        return Capabilities(client, False, path, why="busybox has no tftp applet")
    version = out.splitlines()[0] if out else ""
    return Capabilities(
        client, True, path, version,
        download=bool(re.search(r"^\s*-g\b", out, re.M)),
        upload=bool(re.search(r"^\s*-p\b", out, re.M)),
        blksize=bool(re.search(r"^\s*-b\b", out, re.M)),
        windowsize=False, netascii=False, ipv6=True, tsize="always",
        can_disable_options=False,
    )


def available(name: str) -> bool:
    """True if client *name* (one of :data:`CLIENTS`) is installed and usable
    for TFTP (curl with tftp protocol, tftp-hpa's tftp, atftp, busybox with
    the tftp applet).  Use :func:`capabilities` for feature details, e.g.
    ``capabilities("busybox").blksize`` tells whether ``-b`` exists."""
    return capabilities(name).installed


def require(name: str) -> Capabilities:
    """Return the capabilities of *name* or raise :class:`ClientUnavailable`."""
    caps = capabilities(name)
    if not caps.installed:
        raise ClientUnavailable(f"TFTP client {name} unavailable: {caps.why}")
    return caps


def _check_name(client: str) -> None:
    if client not in CLIENTS:
        raise ValueError(f"unknown TFTP client {client!r}; expected one of {CLIENTS}")


# --------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Result:
    """Outcome of one client run.

    ``returncode`` is normalised: 0 means the client reported success,
    non-zero failure, :data:`TIMEOUT_RETURNCODE` a hard kill.
    ``raw_returncode`` is the process's own exit status (``None`` if it was
    killed).  ``note`` explains any normalisation.
    """

    client: str
    direction: str  # "download" | "upload"
    argv: tuple
    returncode: int
    stdout: str
    stderr: str
    raw_returncode: int | None = None
    timed_out: bool = False
    duration: float = 0.0
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def command(self) -> str:
        """The command line, shell-quoted (for messages / copy-paste)."""
        return shlex.join(self.argv)

    @property
    def output(self) -> str:
        """stdout and stderr concatenated."""
        return self.stdout + self.stderr

    def check(self) -> Result:
        """Raise ``AssertionError`` with all details unless :attr:`ok`."""
        if not self.ok:
            raise AssertionError(f"TFTP client failed:\n{self}")
        return self

    def __str__(self) -> str:
        lines = [
            f"{self.client} {self.direction}: returncode={self.returncode}"
            f" (raw={self.raw_returncode}) in {self.duration:.2f}s",
            f"  $ {self.command}",
        ]
        if self.note:
            lines.append(f"  note: {self.note}")
        for label, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            text = text.strip()
            if text:
                if len(text) > 4000:
                    text = text[:2000] + "\n  [...]\n" + text[-2000:]
                lines.append(f"  {label}:\n    " + text.replace("\n", "\n    "))
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class ServerError:
    """A TFTP ERROR packet the client said it received.

    ``code`` is ``None`` when the client does not reveal it (atftp) or it is
    ambiguous (curl exit 71 = code 0 or 4; exit 42 = code 8 or unknown).
    ``message`` is ``None`` if the client does not print it.
    """

    code: int | None
    message: str | None


# curl exit status -> TFTP error code (see lib/tftp.c tftp_translate_code).
_CURL_EXIT_TO_CODE = {68: 1, 69: 2, 70: 3, 71: None, 72: 5, 73: 6, 74: 7, 42: None}


def server_error(result: Result) -> ServerError | None:
    """The TFTP ERROR the client reports having received, or ``None``
    (success, timeout, or a purely local failure)."""
    text = result.output
    if result.client == "tftp-hpa":
        m = re.search(r"^Error code (\d+): ?(.*)$", text, re.M)
        return ServerError(int(m.group(1)), m.group(2)) if m else None
    if result.client == "busybox":
        m = re.search(r"server error: \((\d+)\) ?(.*)$", text, re.M)
        return ServerError(int(m.group(1)), m.group(2)) if m else None
    if result.client == "atftp":
        m = re.search(r"error received from server <(.*)>\s*$", text, re.M)
        return ServerError(None, m.group(1)) if m else None
    if result.client == "curl":
        m = re.search(r"^\* TFTP error: ?(.*)$", text, re.M)
        if not m:
            return None
        return ServerError(_CURL_EXIT_TO_CODE.get(result.raw_returncode), m.group(1))
    return None


def error_reported(result: Result) -> bool:
    """True if the client reports that the server sent a TFTP ERROR."""
    return server_error(result) is not None


# --------------------------------------------------------------------------
# Command construction
# --------------------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env.pop("LANGUAGE", None)
    return env


def _bare_host(host: str) -> str:
    host = str(host)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def _is_ipv6(host: str) -> bool:
    return ":" in host


def _fmt_num(x: float) -> str:
    return f"{x:g}"


def build_command(
    client: str,
    direction: str,
    host: str,
    port: int,
    remote: str,
    local_path: PathLike,
    *,
    mode: str = "octet",
    blksize: int | None = None,
    windowsize: int | None = None,
    tsize: bool | None = None,
    no_options: bool = False,
    allow_untranslated: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 60,
) -> list:
    """Return the argv that :func:`download` / :func:`upload` would run.

    Raises :class:`Unsupported` / :class:`ClientUnavailable` /
    ``ValueError`` exactly as they would.  See :func:`download` for the
    meaning of the keyword arguments.
    """
    _check_name(client)
    if direction not in ("download", "upload"):
        raise ValueError(f"direction must be 'download' or 'upload', not {direction!r}")
    if mode not in ("octet", "netascii"):
        raise ValueError(f"mode must be 'octet' or 'netascii', not {mode!r}")
    if no_options:
        if blksize is not None or windowsize is not None or tsize:
            raise ValueError("no_options=True contradicts blksize/windowsize/tsize")
        tsize = False
    caps = require(client)
    if not getattr(caps, direction):
        raise Unsupported(f"{client} cannot {direction}")
    if blksize is not None and not caps.blksize:
        raise Unsupported(f"{client} cannot request blksize")
    if windowsize is not None and not caps.windowsize:
        raise Unsupported(f"{client} cannot request windowsize")
    if mode == "netascii" and not caps.netascii:
        if not (caps.raw_netascii and allow_untranslated):
            extra = (" (it can only send the mode string without translating;"
                     " pass allow_untranslated=True for that)"
                     if caps.raw_netascii else "")
            raise Unsupported(f"{client} cannot do netascii{extra}")
    if tsize and caps.tsize == "never":
        raise Unsupported(f"{client} cannot request tsize")
    if tsize is False and caps.tsize == "always" and not caps.can_disable_options:
        raise Unsupported(f"{client} always sends tsize")

    host = _bare_host(host)
    port = int(port)
    local = os.fspath(local_path)
    extra = [str(a) for a in extra_args]
    up = direction == "upload"

    if client == "curl":
        if tsize is False and blksize is not None:
            raise Unsupported("curl can only drop tsize via --tftp-no-options,"
                              " which also ignores --tftp-blksize")
        url_host = f"[{host}]" if _is_ipv6(host) else host
        url = f"tftp://{url_host}:{port}/{urllib.parse.quote(remote, safe='/')}"
        if mode == "netascii":
            url += ";mode=netascii"
        argv = [caps.path, "-q", "-g", "-sS", "-v",
                "--max-time", _fmt_num(max(0.5, timeout - _CURL_MARGIN))]
        if blksize is not None:
            argv += ["--tftp-blksize", str(blksize)]
        if tsize is False:
            argv += ["--tftp-no-options"]
        argv += extra
        argv += ["-T", local, url] if up else ["-o", local, url]
        return argv

    if client == "tftp-hpa":
        argv = [caps.path, "-v", "-l", "-m", mode]
        if _is_ipv6(host):
            argv.append("-6")
        argv += extra
        argv += [host, str(port), "-c"]
        argv += ["put", local, remote] if up else ["get", remote, local]
        return argv

    if client == "atftp":
        argv = [caps.path, "--put" if up else "--get", "-r", remote, "-l", local]
        if mode == "netascii":
            argv += ["--option", "mode netascii"]
        if blksize is not None:
            argv += ["--option", f"blksize {blksize}"]
        if windowsize is not None:
            argv += ["--option", f"windowsize {windowsize}"]
        if tsize:
            argv += ["--option", "tsize enable"]
        argv += extra
        argv += [host, str(port)]
        return argv

    # busybox
    argv = [caps.path, "tftp", "-p" if up else "-g", "-r", remote, "-l", local]
    if blksize is not None:
        argv += ["-b", str(blksize)]
    argv += extra
    argv += [host, str(port)]
    return argv


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


# tftp-hpa failure markers (it exits 0 regardless).  "Error code" / "Transfer
# timed out." / "Error:" go to stdout; local errors go to stderr via perror
# ("tftp: <path>: No such file or directory").  The verbose success line
# ("Received N bytes ..." / "Sent N bytes ...") is *not* printed for a
# zero-byte transfer, so its absence alone is not a failure.
_HPA_FAILURE = re.compile(
    r"^(Error code \d+.*|Transfer timed out\.?|Error: .*|.*: unknown host"
    r"|.*: bad port number|.*: invalid command: .*|tftp: .*)$",
    re.M,
)
_HPA_HARMLESS_STDERR = re.compile(r"^(Warning: .*|.*unknown service, faking it.*)$")


def _normalise(client: str, raw: int, stdout: str, stderr: str):
    """Return (returncode, note) for a client that exited by itself."""
    if client == "tftp-hpa" and raw == 0:
        m = _HPA_FAILURE.search(stdout)
        bad = [line for line in stderr.splitlines()
               if line.strip() and not _HPA_HARMLESS_STDERR.match(line)]
        if m:
            return TFTP_HPA_FAILURE, f"tftp-hpa exited 0 but failed ({m.group(0)!r})"
        if bad:
            return TFTP_HPA_FAILURE, f"tftp-hpa exited 0 but failed ({bad[0]!r} on stderr)"
    return raw, ""


def run(client: str, direction: str, argv: Sequence[str], *, timeout: float = 60) -> Result:
    """Run *argv* with a hard *timeout* and wrap the outcome in a Result.

    The child gets its own session; on timeout its process group is
    SIGKILLed and the Result has ``returncode == TIMEOUT_RETURNCODE``.
    """
    argv = tuple(str(a) for a in argv)
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # pipes held open by a grandchild
            proc.kill()
            out, err = b"", b""
            proc.wait()
    finally:
        if proc.poll() is None:  # e.g. KeyboardInterrupt in communicate()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    duration = time.monotonic() - start
    stdout = (out or b"").decode("utf-8", "replace")
    stderr = (err or b"").decode("utf-8", "replace")
    if timed_out:
        return Result(client, direction, argv, TIMEOUT_RETURNCODE, stdout, stderr,
                      raw_returncode=None, timed_out=True, duration=duration,
                      note=f"killed (SIGKILL) after {timeout:g}s timeout")
    rc, note = _normalise(client, proc.returncode, stdout, stderr)
    return Result(client, direction, argv, rc, stdout, stderr,
                  raw_returncode=proc.returncode, duration=duration, note=note)


def download(
    client: str,
    host: str,
    port: int,
    remote: str,
    local_path: PathLike,
    *,
    mode: str = "octet",
    blksize: int | None = None,
    windowsize: int | None = None,
    tsize: bool | None = None,
    no_options: bool = False,
    allow_untranslated: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 60,
) -> Result:
    """Fetch *remote* from ``host:port`` into *local_path* (RRQ) with *client*.

    :param client: one of :data:`CLIENTS`.
    :param host: ``"127.0.0.1"``, ``"::1"`` (or ``"[::1]"``), a host name.
    :param mode: ``"octet"`` or ``"netascii"``.  netascii is translated by
        tftp-hpa and atftp; busybox cannot do it; curl only with
        ``allow_untranslated=True`` (wire bytes written verbatim).
    :param blksize: request RFC 2348 blksize (``None`` = client default;
        curl then still sends ``blksize 512``).
    :param windowsize: request RFC 7440 windowsize (atftp >= 0.8 only).
    :param tsize: ``None`` = client default (see module doc), ``True`` =
        make sure tsize is requested, ``False`` = make sure it is not (curl:
        uses ``--tftp-no-options``, so incompatible with *blksize*).
    :param no_options: send a bare RFC 1350 request (no options at all);
        busybox cannot.
    :param extra_args: raw extra arguments, inserted among the client's
        options (before host/URL; before ``-c`` for tftp-hpa).
    :param timeout: hard wall-clock limit in seconds.
    :raises Unsupported: the client is missing or cannot do this.
    """
    argv = build_command(
        client, "download", host, port, remote, local_path, mode=mode,
        blksize=blksize, windowsize=windowsize, tsize=tsize,
        no_options=no_options, allow_untranslated=allow_untranslated,
        extra_args=extra_args, timeout=timeout,
    )
    return run(client, "download", argv, timeout=timeout)


def upload(
    client: str,
    host: str,
    port: int,
    local_path: PathLike,
    remote: str,
    *,
    mode: str = "octet",
    blksize: int | None = None,
    windowsize: int | None = None,
    tsize: bool | None = None,
    no_options: bool = False,
    allow_untranslated: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 60,
) -> Result:
    """Send *local_path* to ``host:port`` as *remote* (WRQ) with *client*.

    Same keywords as :func:`download`.  With tsize the clients that send it
    (curl, busybox, atftp on request) announce the local file size.
    """
    argv = build_command(
        client, "upload", host, port, remote, local_path, mode=mode,
        blksize=blksize, windowsize=windowsize, tsize=tsize,
        no_options=no_options, allow_untranslated=allow_untranslated,
        extra_args=extra_args, timeout=timeout,
    )
    return run(client, "upload", argv, timeout=timeout)


# --------------------------------------------------------------------------
# Per-client shortcuts (same signature as download/upload minus `client`)
# --------------------------------------------------------------------------


def _bind(func: Callable, client: str) -> Callable:
    bound = functools.partial(func, client)
    bound.__doc__ = f"``{func.__name__}({client!r}, ...)``; see :func:`{func.__name__}`."
    return bound


curl_download = _bind(download, "curl")
curl_upload = _bind(upload, "curl")
tftp_hpa_download = _bind(download, "tftp-hpa")
tftp_hpa_upload = _bind(upload, "tftp-hpa")
atftp_download = _bind(download, "atftp")
atftp_upload = _bind(upload, "atftp")
busybox_download = _bind(download, "busybox")
busybox_upload = _bind(upload, "busybox")
