import os

import pytest
import pytest_twisted

from txfbtftp import FilesystemBackend
from txfbtftp import ServerConfig
from txfbtftp import TFTPService


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "root"
    d.mkdir()
    (d / "hello.txt").write_bytes(b"Hello from txfbtftp\n")
    (d / "small.bin").write_bytes(os.urandom(5000))
    return d


@pytest.fixture
def servers():
    """Server processes a test started (tests/processes.py); killed when
    it ends, whatever happened."""
    started = []
    yield started
    for s in started:
        s.stop()


@pytest.fixture
def started():
    """Services a test started; stopped when it ends."""
    services = []
    yield services
    for svc in services:
        if svc.running:
            pytest_twisted.blockon(svc.stopService())


@pytest.fixture
def serve(root, started):
    """``serve(**config)`` starts a TFTPService on 127.0.0.1, an ephemeral port."""
    from twisted.internet import reactor

    def start(backend=None, interfaces=("127.0.0.1",), reactor=reactor, on_record=None,
              writable=False, overwrite=False, **config):
        backend = backend or FilesystemBackend(str(root), writable=writable, overwrite=overwrite)
        config.setdefault("shutdown_grace", 0)  # a test's end stops at once
        svc = TFTPService(backend, reactor, 0, interfaces, ServerConfig(**config), session_stats_callback=on_record)
        svc.startService()
        started.append(svc)
        return svc

    return start


@pytest.fixture
def service(root, started):
    """``service(reactor=..., config=ServerConfig(...), **TFTPService keywords)`` on 127.0.0.1."""

    def start(reactor=None, config=None, **kw):
        if reactor is None:
            from twisted.internet import reactor
        backend = FilesystemBackend(str(root), writable=True)
        svc = TFTPService(backend, reactor, 0, ["127.0.0.1"], config or ServerConfig(dally=0.05, shutdown_grace=0),
                          **kw)
        svc.startService()
        started.append(svc)
        return svc

    return start


@pytest.fixture
def origin():
    """A controllable HTTP origin on loopback (tests/httporigin.py)."""
    from .httporigin import Origin

    o = Origin()
    yield o
    pytest_twisted.blockon(o.close())
