"""Dynamic content: python: and template: backends, chains, remapping; units and real clients."""
import dataclasses
import io
import os
import subprocess
import sys
import textwrap

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from txfbtftp._protocol import errors
from txfbtftp._protocol.paths import normalize
from txfbtftp._backends import from_spec
from txfbtftp import ChainBackend
from txfbtftp import FilesystemBackend
from txfbtftp._backends.template import (NamePattern, TemplateBackend, parse_clients, render,
                                        variables)
from txfbtftp import IWritableBackend, MemoryBackend, TransferRequest
from txfbtftp._backends.remap import RemapBackend, parse_rules, rewrite, try_rules
from txfbtftp._daemon.options import Options
from txfbtftp._daemon.build import build_backend
from txfbtftp.testing import MemoryServer
from txfbtftp._daemon.tap import makeService

from . import clients
from .rawclient import download, listen

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRICT = os.environ.get("TXFBTFTP_REQUIRE_CLIENTS") == "1"
MAC = "88-99-aa-bb-cc-dd"


def req(path="x", client=("10.0.0.5", 2000), local=("10.0.0.1", 69), write=False):
    return TransferRequest(path=path, client=client, local=local, mode="octet", write=write)


def read_all(reader):
    data = reader.read(1 << 20)
    reader.close()
    return data

def built(options):
    """The backend ``makeService`` builds from ``options``."""
    from twisted.internet import reactor
    return build_backend(options, reactor)


def parse(*args):
    o = Options()
    o.parseOptions(list(args))
    return o


# -- template: names, variables, rendering ---------------------------------------

@pytest.mark.parametrize("name,requested,expect", [
    ("01-{mac}", "01-88-99-aa-bb-cc-dd", {"mac": "88:99:aa:bb:cc:dd", "mac_hex": "8899aabbccdd"}),
    ("01-{mac}", "01-88-99-AA-BB-CC-DD", {"mac_dash": "88-99-aa-bb-cc-dd"}),
    ("boot-{mac}.ipxe", "boot-889900aabbcc.ipxe", {"mac": "88:99:00:aa:bb:cc"}),
    ("grub.cfg-{ip}", "grub.cfg-10.0.0.5", {"ip": "10.0.0.5", "ip_hex": "0A000005", "ip_dash": "10-0-0-5"}),
    ("{ip_hex}", "C0A80105", {"ip": "192.168.1.5"}),
    ("{name}.cfg", "web01.cfg", {"name": "web01"}),
    ("{a}-{a}", "x-x", {"a": "x"}),
    ("boot.ipxe", "boot.ipxe", {}),
])
def test_name_patterns_match_and_capture(name, requested, expect):
    got = NamePattern(name).match(requested)
    if expect is None:
        assert got is None
    else:
        assert got is not None and expect.items() <= got.items()


@pytest.mark.parametrize("name,requested", [
    ("01-{mac}", "01-88-99-aa-bb-cc"), ("grub.cfg-{ip}", "grub.cfg-10.0.0.256"),
    ("grub.cfg-{ip}", "grub.cfg-host"), ("{ip_hex}", "C0A8010"), ("{a}-{a}", "x-y"),
    ("boot.ipxe", "BOOT.IPXE"),
])
def test_name_patterns_refuse(name, requested):
    assert NamePattern(name).match(requested) is None


def test_variables_are_a_function_of_the_request():
    v = variables("pxelinux.cfg/01-88-99-aa-bb-cc-dd", req(client=("10.0.0.5", 2000), local=("10.0.0.1", 69)))
    assert v["client_ip"] == "10.0.0.5" and v["client_port"] == "2000" and v["client_ip_hex"] == "0A000005"
    assert v["client_ip_dash"] == "10-0-0-5" and v["server_ip"] == "10.0.0.1" and v["server_port"] == "69"
    assert v["mac"] == "88:99:aa:bb:cc:dd" and v["path"] == "pxelinux.cfg/01-88-99-aa-bb-cc-dd"
    v6 = variables("boot.ipxe", req(client=("2001:db8::1", 5)))
    assert v6["client_ip_hex"] == "20010DB8000000000000000000000001" and "mac" not in v6
    assert variables("x", req(), known={"client_ip": "spoof", "role": "db"})["client_ip"] == "10.0.0.5"


def test_render_leaves_foreign_placeholders_alone():
    t = b"#!ipxe\nchain http://${server_ip}/$client_ip/${net0/mac}/${unknown} $$5 \xff\n"
    assert render(t, {"server_ip": "10.0.0.1", "client_ip": "10.0.0.5"}) == \
        b"#!ipxe\nchain http://10.0.0.1/10.0.0.5/${net0/mac}/${unknown} $5 \xff\n"


@pytest.fixture
def templates(tmp_path):
    t = tmp_path / "templates"
    (t / "pxelinux.cfg").mkdir(parents=True)
    (t / "pxelinux.cfg" / "01-{mac}").write_text("host $hostname mac $mac from $client_ip via $server_ip\n")
    (t / "pxelinux.cfg" / "01-88-99-aa-bb-cc-ee").write_text("special $mac\n")
    (t / "pxelinux.cfg" / "{ip_hex}").write_text("hex $ip\n")
    (t / "pxelinux.cfg" / ".hidden").write_text("never\n")
    (t / "grub.cfg-{ip}").write_text("set ip=$ip ; set root=${root}\n")
    (t / "grub.cfg-{anything}").write_text("generic $anything\n")
    (t / "boot.ipxe").write_text("#!ipxe\nchain http://${server_ip}/boot/${net0/mac}\n")
    (t / ".clients").write_text(textwrap.dedent("""\
        # known machines
        88:99:aa:bb:cc:dd  hostname=web01 role="front end"
        88-99-aa-bb-cc-ee  hostname=special
        10.0.0.5           hostname=by-ip
        """))
    return t


def test_template_backend_renders_the_best_match(templates):
    b = TemplateBackend(str(templates))
    r = b.get_reader("pxelinux.cfg/01-%s" % MAC, req())
    assert read_all(r) == b"host web01 mac 88:99:aa:bb:cc:dd from 10.0.0.5 via 10.0.0.1\n"
    r = b.get_reader("/pxelinux.cfg/01-88-99-aa-bb-cc-ee", req())
    assert r.size == len(b"special 88:99:aa:bb:cc:ee\n") and read_all(r) == b"special 88:99:aa:bb:cc:ee\n"
    assert read_all(b.get_reader("grub.cfg-10.0.0.7", req())) == b"set ip=10.0.0.7 ; set root=${root}\n"
    assert read_all(b.get_reader("grub.cfg-efi", req())) == b"generic efi\n"
    assert read_all(b.get_reader("pxelinux.cfg/0A000005", req())) == b"hex 10.0.0.5\n"
    assert b"${net0/mac}" in read_all(b.get_reader("boot.ipxe", req()))


@pytest.mark.parametrize("path", [
    "nothing", "pxelinux.cfg/.hidden", "pxelinux.cfg", "pxelinux.cfg/01-88-99-aa-bb-cc", "../templates/boot.ipxe",
    "pxelinux.cfg/../boot.ipxe", ".clients", "missing/boot.ipxe", "",
])
def test_template_backend_does_not_find(templates, path):
    with pytest.raises(errors.FileNotFound):
        TemplateBackend(str(templates)).get_reader(path, req())


def test_unknown_clients_fall_through_and_clients_is_reread(templates):
    b = TemplateBackend(str(templates))
    stranger = req(client=("10.0.0.99", 2000))
    with pytest.raises(errors.FileNotFound):
        b.get_reader("pxelinux.cfg/01-00-11-22-33-44-55", stranger)
    assert read_all(b.get_reader("boot.ipxe", req()))  # known by IP
    with pytest.raises(errors.FileNotFound):
        b.get_reader("boot.ipxe", stranger)
    (templates / ".clients").write_text("10.0.0.99 hostname=new\n")
    assert read_all(b.get_reader("boot.ipxe", stranger))
    (templates / ".clients").unlink()
    assert read_all(b.get_reader("pxelinux.cfg/01-00-11-22-33-44-55", stranger)).startswith(b"host $hostname mac 00:11")
    assert not IWritableBackend.providedBy(b)  # uploads are refused before any backend is asked


@pytest.mark.parametrize("text,words", [
    ("nonsense a=b\n", "line 1: 'nonsense' is neither"),
    ("# c\n10.0.0.1 novalue\n", "line 2: expected name=value"),
    ("10.0.0.1 'open\n", "line 1: No closing quotation"),
])
def test_bad_clients_file(text, words, tmp_path):
    with pytest.raises(ValueError, match=words):
        parse_clients(text)
    (tmp_path / ".clients").write_text(text)
    with pytest.raises(ValueError, match=words):
        TemplateBackend(str(tmp_path)).start()


# -- chain -----------------------------------------------------------------------

@implementer(IWritableBackend)
class Fixed:
    """Answers with ``result``, raises it if it is an exception, or fails a Deferred with it."""

    def __init__(self, result, deferred=False):
        self.result, self.deferred, self.asked = result, deferred, 0

    def _answer(self):
        self.asked += 1
        if self.deferred:
            return defer.fail(self.result) if isinstance(self.result, Exception) else defer.succeed(self.result)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def get_reader(self, path, request):
        return self._answer()

    def get_writer(self, path, request):
        return self._answer()


def outcome(result):
    """What a backend call amounts to: the value or the exception, Deferred or not."""
    if isinstance(result, defer.Deferred):
        got = []
        result.addBoth(got.append)
        (value,) = got
        return value.value if isinstance(value, Failure) else value
    return result


def call(fn):
    try:
        return outcome(fn())
    except Exception as e:
        return e


@pytest.mark.parametrize("deferred", [False, True])
def test_chain_reads_fall_through_only_on_not_found(deferred):
    first, second, third = Fixed(errors.FileNotFound(), deferred), Fixed("two", deferred), Fixed("three")
    chain = ChainBackend([first, second, third])
    assert call(lambda: chain.get_reader("p", req())) == "two" and third.asked == 0
    stop = ChainBackend([Fixed(errors.AccessViolation(), deferred), second])
    assert isinstance(call(lambda: stop.get_reader("p", req())), errors.AccessViolation)
    crash = ChainBackend([Fixed(RuntimeError("boom"), deferred), second])
    assert isinstance(call(lambda: crash.get_reader("p", req())), RuntimeError)
    none = ChainBackend([Fixed(errors.FileNotFound(), deferred), Fixed(errors.FileNotFound(), deferred)])
    assert isinstance(call(lambda: none.get_reader("p", req())), errors.FileNotFound)
    if not deferred:
        assert chain.get_reader("p", req()) == "two"  # no Deferred on the synchronous path


@pytest.mark.parametrize("deferred", [False, True])
def test_chain_writes_go_to_the_first_backend_that_accepts(deferred):
    ro = Fixed(errors.AccessViolation("Uploads are disabled"), deferred)
    chain = ChainBackend([ro, Fixed(errors.FileNotFound(), deferred), Fixed("writer", deferred)])
    assert call(lambda: chain.get_writer("p", req(write=True))) == "writer"
    exists = ChainBackend([ro, Fixed(errors.FileExists(), deferred), Fixed("writer")])
    assert isinstance(call(lambda: exists.get_writer("p", req(write=True))), errors.FileExists)
    nobody = ChainBackend([Fixed(errors.FileNotFound(), deferred), ro, Fixed(errors.FileNotFound())])
    refused = call(lambda: nobody.get_writer("p", req(write=True)))
    assert isinstance(refused, errors.AccessViolation) and refused.message == "Uploads are disabled"


def test_chain_needs_a_backend():
    with pytest.raises(ValueError):
        ChainBackend([])


# -- remap -----------------------------------------------------------------------

def apply(rules_text, path, client="10.0.0.5", write=False):
    try:
        return rewrite(path, parse_rules(rules_text), client, write)
    except errors.AccessViolation as e:
        return "DENIED " + e.message


@pytest.mark.parametrize("rules,path,expect", [
    (r"r ^/", "/pxelinux.0", "pxelinux.0"),
    (r"r a b", "aaa", "baa"),
    (r"rg a b", "aaa", "bbb"),
    (r"rg ab b", "aaab", "b"),  # repeated until it no longer matches, like tftpd-hpa
    (r"ri ^PXELINUX\.CFG/ pxelinux.cfg/", "PxeLinux.Cfg/default", "pxelinux.cfg/default"),
    (r"r ^PXELINUX\.CFG/ pxelinux.cfg/", "PxeLinux.Cfg/default", "PxeLinux.Cfg/default"),
    ("re ^a x\nr x y", "ab", "xb"),
    ("e ^a\nr a y", "ab", "ab"),
    ("re ^b x\nr a y", "ab", "yb"),
    ("r ^c$ b\nrs ^a$ c\nr ^b$ d", "a", "d"),
    (r"r (.*)\.(.*) \2.\1\0", "a.b", "b.aa.b"),
    (r"r ^(x)?y \1z", "y", "z"),
    (r"r ^ \i/", "boot", "10.0.0.5/boot"),
    (r"r ^ \x/", "boot", "0A000005/boot"),
    (r"r ^(pxelinux\.cfg/)(.*)$ \1\L\2", "pxelinux.cfg/01-AA-BB", "pxelinux.cfg/01-aa-bb"),
    (r"r ^([a-z]+)(.*)$ \U\1\E\2", "boot/x", "BOOT/x"),
    (r"r ^old\ name new\#name\\ # comment", "old name", "new#name\\"),
    (r"r [[:digit:]]+ N", "pxe42.0", "pxeN.0"),
    (r"a ^secret", "secret/key", "DENIED Access violation"),
    (r"a ^secret(.*) No\ \1", "secret/key", "DENIED No /key"),
    (r"a~ \.(efi|0)$", "kernel", "DENIED Access violation"),
    (r"a~ \.(efi|0)$", "grubx64.efi", "grubx64.efi"),
    (r"rg a aa", "a", "DENIED Access violation"),  # never terminates: refused
    ("rG ^ get/\nrP ^ put/", "f", "get/f"),
    ("r4 ^ v4/\nr6 ^ v6/", "f", "v4/f"),
    ("# only comments\n\n   # and blanks", "\\Boot\\BCD", "\\Boot\\BCD"),  # the raw name
    (r"rg \\ /", "\\Boot\\BCD", "/Boot/BCD"),
])
def test_rewrite(rules, path, expect):
    assert apply(rules, path) == expect


def test_rewrite_by_direction_and_family():
    assert apply("rG ^ get/\nrP ^ put/", "f", write=True) == "put/f"
    assert apply("r4 ^ v4/\nr6 ^ v6/", "f", client="2001:db8::1") == "v6/f"
    assert apply(r"r ^ \x", "", client="2001:db8::1") == "20010DB8000000000000000000000001"


@pytest.mark.parametrize("text,words", [
    ("rq a b", r"rules, line 1: unknown flag 'q'"),
    ("\n\nr~ a b", "line 3: a rewrite .r. cannot be inverted"),
    ("r", "line 1: no regex after 'r'"),
    ("r ( x", "line 1: bad regex"),
    ("r a b c", "line 1: unexpected 'c'"),
])
def test_bad_rules_say_where(text, words):
    with pytest.raises(ValueError, match=words):
        parse_rules(text)


def raw(name, write=False):
    """The path and request the server gives a backend for ``name``."""
    clean = normalize(name)
    return clean, dataclasses.replace(req(write=write), path=clean, raw_path=name)


def test_remap_backend_wraps_any_backend(root):
    inner = FilesystemBackend(str(root))
    b = RemapBackend(inner, parse_rules("rg \\\\ /\nri ^/?HELLO hello\na ^/?small"))
    assert read_all(b.get_reader(*raw("\\HELLO.txt"))) == b"Hello from txfbtftp\n"
    assert read_all(b.get_reader(*raw("//hello.txt"))) == b"Hello from txfbtftp\n"
    with pytest.raises(errors.AccessViolation):
        b.get_reader(*raw("small.bin"))
    with pytest.raises(errors.AccessViolation):
        b.get_writer(*raw("/small.bin", write=True))


def test_remap_rules_see_the_raw_name_and_their_result_is_cleaned():
    inner = MemoryBackend({"Boot/BCD": b"bcd", "HELLO": b"hi"})
    b = RemapBackend(inner, parse_rules(r"r ^\\Boot\\ Boot/"))
    assert read_all(b.get_reader(*raw("\\Boot\\BCD"))) == b"bcd"  # the rule matched the raw name
    assert read_all(b.get_reader(*raw("//HELLO"))) == b"hi"          # no rule: cleaned all the same
    with pytest.raises(errors.AccessViolation, match="Parent"):
        RemapBackend(inner, parse_rules("r ^ ../")).get_reader(*raw("x"))
    with pytest.raises(errors.FileNotFound):
        RemapBackend(inner, parse_rules("r .* /")).get_reader(*raw("x"))
    # a backend in front that chose another path wins over the raw name
    assert read_all(RemapBackend(inner, []).get_reader("HELLO", raw("other")[1])) == b"hi"


def test_try_rules_prints_each_path():
    out = io.StringIO()
    rules = parse_rules("r ^/\na ^secret")
    assert try_rules(rules, io.StringIO("/a\\b\nsecret\r\n../x\n"), out) == 0
    assert out.getvalue() == "a/b\nDENIED\nDENIED\n"


# -- python: ---------------------------------------------------------------------

SITE = '''
from zope.interface import implementer
from txfbtftp import BytesReader, FileNotFound, IBackend


@implementer(IBackend)
class Configs:
    def __init__(self, prefix="", writable=False):
        self.prefix, self.writable = prefix, writable

    def get_reader(self, path, request):
        if not path.startswith("hosts/"):
            raise FileNotFound()
        return BytesReader(b"%s%s asked for %s\\n" % (self.prefix.encode(), request.client[0].encode(),
                                                      path.encode()))


def make(prefix="", *, writable=False):
    return Configs(prefix, writable)


instance = Configs("ready:")
not_a_backend = 42


def returns_junk():
    return object()
'''


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A module ``dyn_site`` on sys.path, as a site's own code would be."""
    (tmp_path / "dyn_site.py").write_text(SITE)
    (tmp_path / "dyn_broken.py").write_text("import no_such_dependency_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "dyn_site"
    for name in ("dyn_site", "dyn_broken"):
        sys.modules.pop(name, None)


def test_python_backend_calls_the_factory(site):
    b = from_spec("python:dyn_site:make", writable=True, overwrite=True)
    assert b.writable and b.prefix == ""
    b = from_spec("python:dyn_site:make:pre:fix:", writable=False)
    assert b.prefix == "pre:fix:" and not b.writable
    assert read_all(b.get_reader("hosts/a", req())) == b"pre:fix:10.0.0.5 asked for hosts/a\n"
    assert from_spec("python:dyn_site:instance").prefix == "ready:"
    assert from_spec("python:dyn_site:Configs:p", writable=True).prefix == "p"


def test_python_backend_from_a_file(tmp_path):
    (tmp_path / "dyn_file.py").write_text(SITE)
    (tmp_path / "json.py").write_text(SITE)
    try:
        first = from_spec("python:%s:make:a" % (tmp_path / "dyn_file.py"))
        again = from_spec("python:%s:make:b" % (tmp_path / "dyn_file.py"))
        assert (first.prefix, again.prefix) == ("a", "b") and type(first) is type(again)
    finally:
        sys.modules.pop("dyn_file", None)
    with pytest.raises(ValueError, match="a different module named json is loaded already"):
        from_spec("python:%s:make" % (tmp_path / "json.py"))
    with pytest.raises(ValueError, match="cannot import .*nothing.py: FileNotFoundError"):
        from_spec("python:%s:make" % (tmp_path / "nothing.py"))


@pytest.mark.parametrize("spec,words", [
    ("python:dyn_site", "takes MODULE:NAME"),
    ("python::make", "takes MODULE:NAME"),
    ("python:dyn_nowhere:make", "cannot import dyn_nowhere: ModuleNotFoundError.*PYTHONPATH.*dyn_nowhere.py:make"),
    ("python:dyn_broken:make", "cannot import dyn_broken: ModuleNotFoundError: No module named 'no_such_dep"),
    ("python:dyn_site:nothing", "module dyn_site has no attribute 'nothing'"),
    ("python:dyn_site:not_a_backend", "neither a backend nor callable"),
    ("python:dyn_site:returns_junk:arg", "cannot call dyn_site.returns_junk with an argument"),
    ("python:dyn_site:instance:arg", "takes no argument"),
])
def test_python_backend_errors_are_usage_errors(site, spec, words):
    with pytest.raises(ValueError, match=words):
        from_spec(spec)
    with pytest.raises(usage.UsageError, match=words):
        parse("--backend", spec)


def test_a_factory_that_returns_no_backend_fails_the_build(site):
    """Only calling the factory tells, and options do not build: makeService does."""
    words = "which does not provide txfbtftp.IBackend"
    with pytest.raises(ValueError, match=words):
        from_spec("python:dyn_site:returns_junk")
    options = parse("--backend", "python:dyn_site:returns_junk")
    with pytest.raises(ValueError, match=words):
        makeService(options)


# -- twistd options --------------------------------------------------------------

def test_backend_repeats_into_a_chain_and_remap_wraps_it(tmp_path, templates, root):
    rules = tmp_path / "rules"
    rules.write_text("r ^/\n")
    o = parse("--backend", "template:%s" % templates, "-b", "fs:%s" % root, "--writable")
    assert isinstance(built(o), ChainBackend) and o["backends"] == ["template:%s" % templates, "fs:%s" % root]
    assert [type(b) for b in built(o).backends] == [TemplateBackend, FilesystemBackend]
    assert built(o).backends[1].writable
    o = parse("--backend", "fs:%s" % root, "--remap", str(rules))
    assert isinstance(built(o), RemapBackend) and isinstance(built(o).inner, FilesystemBackend)
    assert len(built(o).rules) == 1


@pytest.mark.parametrize("args,words", [
    (("--backend", "fs:/tmp", "--remap", "/does/not/exist"), "cannot read remap rules /does/not/exist"),
    (("--remap-test",), "--remap-test needs --remap"),
    (("--backend", "template:/does/not/exist"), "not a directory"),
])
def test_bad_dynamic_options(args, words):
    with pytest.raises(usage.UsageError, match=words):
        parse(*args)


def test_bad_rule_file_is_a_usage_error(tmp_path):
    (tmp_path / "rules").write_text("# fine\nrx a b\n")
    with pytest.raises(usage.UsageError, match="rules, line 2: unknown flag 'x'"):
        parse("--backend", "fs:/tmp", "--remap", str(tmp_path / "rules"))


@pytest.mark.parametrize("command", [
    ["-c", "from twisted.scripts.twistd import run; run()", "tftp", "--remap", "RULES", "--remap-test"],
    ["-m", "txfbtftp", "remap-test", "RULES"],
])
def test_remap_test_reads_stdin(tmp_path, command):
    rules = tmp_path / "rules"
    rules.write_text("rg \\\\ /\nri ^/?pxelinux\\.cfg/ pxelinux.cfg/\nr ^/\na \\.\\.\n")
    argv = [sys.executable] + [str(rules) if a == "RULES" else a for a in command]
    done = subprocess.run(argv, input="\\PXELINUX.CFG\\default\n/boot//x\n../etc/passwd\n", capture_output=True,
                          text=True, timeout=60, cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "pxelinux.cfg/default\nboot/x\nDENIED\n"


def test_remap_module_reports_a_bad_file(tmp_path):
    (tmp_path / "rules").write_text("z a b\n")
    done = subprocess.run([sys.executable, "-m", "txfbtftp", "remap-test", str(tmp_path / "rules")], input="",
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 2 and "line 1: unknown flag 'z'" in done.stderr


# -- end to end, real clients ------------------------------------------------------

def fetch(client, svc, remote, out, **kw):
    try:
        clients.build_command(client, "download", "127.0.0.1", svc.bound_port, remote, out, **kw)
    except clients.Unsupported as e:
        if STRICT and isinstance(e, clients.ClientUnavailable):
            pytest.fail(str(e))
        pytest.skip(str(e))
    return deferToThread(clients.download, client, "127.0.0.1", svc.bound_port, remote, out, timeout=30, **kw)


@pytest_twisted.inlineCallbacks
def test_python_backend_with_curl(serve, site, tmp_path):
    svc = serve(backend=built(parse("--backend", "python:dyn_site:make:gen:")))
    out = tmp_path / "out"
    res = yield fetch("curl", svc, "hosts/web01.cfg", out)
    res.check()
    assert out.read_bytes() == b"gen:127.0.0.1 asked for hosts/web01.cfg\n"


@pytest_twisted.inlineCallbacks
def test_template_backend_with_atftp_and_tsize(serve, templates, tmp_path):
    svc = serve(backend=built(parse("--backend", "template:%s" % templates)))
    (templates / ".clients").write_text("88:99:aa:bb:cc:dd hostname=web01\n")
    expected = b"host web01 mac 88:99:aa:bb:cc:dd from 127.0.0.1 via 127.0.0.1\n"
    out = tmp_path / "out"
    res = yield fetch("atftp", svc, "pxelinux.cfg/01-%s" % MAC, out)
    res.check()
    assert out.read_bytes() == expected
    raw = listen()
    data, oack, _ = yield download(raw, ("127.0.0.1", svc.bound_port), "pxelinux.cfg/01-%s" % MAC, {"tsize": "0"})
    yield raw.close()
    assert data == expected and oack == {"tsize": str(len(expected))}
    res = yield fetch("atftp", svc, "pxelinux.cfg/01-00-11-22-33-44-55", tmp_path / "no")
    assert not res.ok and clients.error_reported(res)


@pytest_twisted.inlineCallbacks
def test_chain_with_curl(serve, templates, root, tmp_path):
    (templates / ".clients").unlink()  # every client gets boot.ipxe
    svc = serve(backend=built(parse("--backend", "template:%s" % templates, "--backend", "fs:%s" % root)))
    res = yield fetch("curl", svc, "boot.ipxe", tmp_path / "boot.ipxe")
    res.check()
    assert (tmp_path / "boot.ipxe").read_bytes() == b"#!ipxe\nchain http://127.0.0.1/boot/${net0/mac}\n"
    res = yield fetch("curl", svc, "small.bin", tmp_path / "small.bin")
    res.check()
    assert (tmp_path / "small.bin").read_bytes() == (root / "small.bin").read_bytes()
    res = yield fetch("curl", svc, "nowhere", tmp_path / "nowhere")
    assert clients.server_error(res).code == 1


@pytest_twisted.inlineCallbacks
def test_remap_over_a_chain_with_tftp_hpa(serve, templates, root, tmp_path):
    rules = tmp_path / "rules"
    rules.write_text(textwrap.dedent(r"""
        rg \\                    /                # Windows separators
        ri ^/?pxelinux\.cfg/      pxelinux.cfg/
        r  ^(pxelinux\.cfg/)(.*)  \1\L\2        # PXELINUX.CFG/01-88-99-AA-.. -> lower case
        r  ^/                                   # absolute paths are relative to the root
        a  ^secret                No\ secrets
        """))
    o = parse("--backend", "template:%s" % templates, "--backend", "fs:%s" % root, "--remap", str(rules))
    svc = serve(backend=built(o))
    res = yield fetch("tftp-hpa", svc, "\\PXELINUX.CFG\\01-88-99-AA-BB-CC-DD", tmp_path / "cfg")
    res.check()
    assert (tmp_path / "cfg").read_bytes() == b"host web01 mac 88:99:aa:bb:cc:dd from 127.0.0.1 via 127.0.0.1\n"
    res = yield fetch("tftp-hpa", svc, "//hello.txt", tmp_path / "hello")
    res.check()
    assert (tmp_path / "hello").read_bytes() == b"Hello from txfbtftp\n"
    res = yield fetch("tftp-hpa", svc, "secret", tmp_path / "secret")
    assert clients.server_error(res) == clients.ServerError(2, "No secrets")


def test_templates_answer_each_client_by_its_address_in_memory(templates):
    """The whole server in memory (txfbtftp.testing): the client's address
    reaches the template through the request, whatever the path."""
    backend = TemplateBackend(str(templates))
    backend.start()
    server = MemoryServer(backend, address=("10.0.0.1", 69))
    known = server.get("pxelinux.cfg/01-88-99-aa-bb-cc-dd", client=("10.0.0.5", 2000), options={"tsize": "0"})
    assert known.data == b"host web01 mac 88:99:aa:bb:cc:dd from 10.0.0.5 via 10.0.0.1\n"
    assert known.options == {"tsize": str(len(known.data))} and known.record.reason == "ok"
    stranger = server.get("boot.ipxe", client=("10.0.0.99", 2000))
    assert (stranger.error_code, stranger.record.reason) == (1, "not_found")  # not in .clients
