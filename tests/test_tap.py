"""``twistd tftp``: options in, a service out; and the plugin after a real install."""
import os
import subprocess
import sys

import pytest
from twisted.python import usage

import txfbtftp
from txfbtftp import TFTPService
from txfbtftp._daemon.build import build_backend
from txfbtftp._daemon.options import Options
from txfbtftp._daemon.signals import Signals
from txfbtftp._daemon.tap import makeService


def built(options):
    """The backend ``makeService`` builds from ``options``."""
    from twisted.internet import reactor
    return build_backend(options, reactor)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(*args):
    o = Options()
    o.parseOptions(list(args))
    return o


def test_every_option(tmp_path):
    o = parse("--backend", "fs:%s" % tmp_path, "--port", "6969", "--interface", "127.0.0.1",
              "--interface", "[::1]", "--timeouts", "0.5x4", "--rto-min", "0.01", "--max-blksize", "1468",
              "--max-windowsize", "8", "--writable", "--overwrite", "--max-upload-size", "64M",
              "--port-range", "50000:50099", "--single-port", "--verbose")
    cfg = o["config"]
    assert o["interfaces"] == ["127.0.0.1", "::1"] and o["port"] == 6969
    assert cfg.schedule.waits == (0.5, 1.0, 2.0, 4.0) and cfg.rto_min == 0.01
    assert (cfg.limits.max_blksize, cfg.limits.max_windowsize, cfg.limits.max_upload_size) == (1468, 8, 64 << 20)
    assert cfg.port_range == (50000, 50099) and cfg.single_port
    assert built(o).writable and built(o).overwrite
    tftp, signals = list(makeService(o))
    assert isinstance(tftp, TFTPService) and tftp.port == 6969 and isinstance(signals, Signals)


def test_defaults(tmp_path):
    o = parse("--backend", "fs:%s" % tmp_path)
    assert o["port"] == 69 and o["interfaces"] == ["::"]
    assert o["config"].schedule.total >= 60 and not built(o).writable


@pytest.mark.parametrize("args,words", [
    ((), "--backend is required"),
    (("--backend", "nope:/x"), "unknown backend"),
    (("--backend", "fs:/does/not/exist"), "not a directory"),
    (("--backend", "fs:/tmp", "--timeouts", "1,a"), "bad timeout schedule"),
    (("--backend", "fs:/tmp", "--max-blksize", "4"), "max blksize"),
    (("--backend", "fs:/tmp", "--max-windowsize", "0"), "max windowsize"),
    (("--backend", "fs:/tmp", "--max-upload-size", "lots"), "max-upload-size"),
    (("--backend", "fs:/tmp", "--port-range", "9:1"), "port-range"),
    (("--backend", "fs:/tmp", "--port", "70000"), "--port"),
])
def test_bad_options_give_a_clear_message(args, words):
    with pytest.raises(usage.UsageError, match=words):
        parse(*args)


def test_plugin_and_public_api_after_pip_install(tmp_path):
    """``pip install .`` puts the plugin where twistd looks, outside the checkout;
    the public names import from the package, which is marked typed."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), ROOT],
                   cwd=str(tmp_path), check=True, capture_output=True, timeout=300)
    assert (target / "twisted" / "plugins" / "txfbtftp_plugin.py").exists()
    assert not (target / "twisted" / "__init__.py").exists()
    assert (target / "txfbtftp" / "py.typed").exists()
    env = dict(os.environ, PYTHONPATH=str(target))
    code = ("from twisted.plugin import getPlugins; from twisted.application.service import IServiceMaker;"
            "import txfbtftp; print(txfbtftp.__file__);"
            "from txfbtftp import TFTPService, IBackend, IReader, TransferRequest, ServerConfig, __version__;"
            "print(__version__);"
            "print([p.tapname for p in getPlugins(IServiceMaker)])")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    lines = out.splitlines()
    assert lines[0].startswith(str(target)) and lines[1] == txfbtftp.__version__
    assert "'tftp'" in lines[2]


def test_every_option_is_documented_in_the_operator_guide():
    guide = open(os.path.join(ROOT, "docs", "operating.rst")).read()
    names = [p[0] for p in Options.optParameters] + [f[0] for f in Options.optFlags]
    names += ["backend", "interface", "metrics-path-class", "version", "allow", "deny", "allow-write"]
    missing = [n for n in names if "``--%s" % n not in guide]
    assert missing == []
