import os

import pytest
import pytest_twisted

from txfbtftp.backends.fs import FilesystemBackend
from txfbtftp.config import ServerConfig
from txfbtftp.service import TFTPService


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "root"
    d.mkdir()
    (d / "hello.txt").write_bytes(b"Hello from txfbtftp\n")
    (d / "small.bin").write_bytes(os.urandom(5000))
    return d


@pytest.fixture
def serve(root):
    """``serve(**config)`` starts a TFTPService on 127.0.0.1, an ephemeral port."""
    from twisted.internet import reactor

    started = []

    def start(backend=None, interfaces=("127.0.0.1",), reactor=reactor, on_session_end=None,
              writable=False, overwrite=False, **config):
        backend = backend or FilesystemBackend(str(root), writable=writable, overwrite=overwrite)
        svc = TFTPService(backend, reactor, 0, interfaces, ServerConfig(**config), on_session_end)
        svc.startService()
        started.append(svc)
        return svc

    yield start
    for svc in started:
        if svc.running:
            pytest_twisted.blockon(svc.stopService())
