"""The disk cache in front of an http: origin."""
import hashlib
import json
import os
import random
import threading

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread

from txfbtftp import (CacheBackend, ChainBackend, HTTPOrigin, MemoryBackend, RemapBackend, ServerConfig,
                      TFTPService)
from txfbtftp import _backends as backends
from txfbtftp._backends.http import verify
from txfbtftp._backends.http.index import entry_name
from txfbtftp._protocol import errors
from txfbtftp._daemon.options import Options
from txfbtftp._daemon.build import build_backend

from . import clients, rawclient
from .httporigin import slurp, until


def built(options):
    """The backend ``makeService`` builds from ``options``."""
    from twisted.internet import reactor
    return build_backend(options, reactor)


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def cache(origin, cache_dir):
    """``cache(**kw)``: a CacheBackend over the test origin; call again for a
    fresh instance over the same directory (a restart)."""
    made = []

    def make(timeout=3.0, directory=cache_dir, **kw):
        kw.setdefault("revalidate", 3600)
        made.append(CacheBackend(HTTPOrigin(origin.base, reactor, timeout=timeout), str(directory), reactor, **kw))
        made[-1].start()
        return made[-1]

    yield make
    for c in made:
        pytest_twisted.blockon(c.stop())


def _listen():
    c = rawclient.listen()
    c.transport.maxPacketSize = 65536
    return c


def _stored(cache_dir):
    """The entries' bodies."""
    return sorted(n for n in os.listdir(cache_dir) if n.endswith(".data"))


def _index(cache_dir):
    """The index's entries, by the last segment of their URL."""
    entries = json.loads((cache_dir / "index.json").read_text())["entries"].values()
    return {e["key"].rsplit("/", 1)[1]: e for e in entries}


def _body(seed, size):
    return random.Random(seed).randbytes(size)


@pytest_twisted.inlineCallbacks
def _get(backend, name):
    reader = yield backend.get_reader(name, None)
    data = yield slurp(reader)
    yield backend.idle()
    return data


@pytest_twisted.inlineCallbacks
def test_200_clients_on_a_cold_cache_make_one_origin_request(serve, cache, origin, cache_dir):
    body = _body(1, 300001)
    gate = Deferred()
    origin.add("vmlinuz", body, gate=gate, gate_after=65536, chunk=32768)
    svc = serve(backend=cache())
    server = ("127.0.0.1", svc.bound_port)
    clients_ = [_listen() for _ in range(200)]
    try:
        downloads = [rawclient.download(c, server, "vmlinuz", {"blksize": "8192", "tsize": "0"})
                     for c in clients_]
        yield until(lambda: len(svc.sessions) == 200 and all(c.received for c in clients_))
        assert len(origin.seen) == 1
        assert _stored(cache_dir) == []  # nothing visible until complete
        gate.callback(None)
        results = yield DeferredList(downloads, fireOnOneErrback=True, consumeErrors=True)
        yield svc.backend.idle()
        for _, (data, oack, _) in results:
            assert oack["tsize"] == str(len(body)) and data == body
        assert len(origin.seen) == 1
        clients_.append(_listen())
        assert (yield rawclient.download(clients_[-1], server, "vmlinuz"))[0] == body
        assert len(origin.seen) == 1 and len(_stored(cache_dir)) == 1
    finally:
        for c in clients_:
            c.close()


@pytest.mark.parametrize("validator", ["etag", "last_modified"])
@pytest_twisted.inlineCallbacks
def test_revalidation(cache, origin, cache_dir, validator):
    now = [1000.0]
    backend = cache(clock=lambda: now[0], revalidate=10)
    first = {"etag": '"v1"', "last_modified": "Mon, 01 Jan 2024 00:00:00 GMT"}[validator]
    spec = origin.add("initrd", b"one" * 1000, **{validator: first})
    assert (yield _get(backend, "initrd")) == b"one" * 1000
    data_files = _stored(cache_dir)
    now[0] += 5
    assert (yield _get(backend, "initrd")) == b"one" * 1000
    assert len(origin.seen) == 1
    now[0] += 10  # stale: a conditional request, answered 304
    assert (yield _get(backend, "initrd")) == b"one" * 1000
    seen = origin.seen[-1]
    assert len(origin.seen) == 2
    assert (seen.if_none_match if validator == "etag" else seen.if_modified_since) == first.encode()
    assert _stored(cache_dir) == data_files
    now[0] += 5  # 304 restarted the clock
    assert (yield _get(backend, "initrd")) == b"one" * 1000 and len(origin.seen) == 2
    spec.body = b"two" * 2000
    setattr(spec, validator, {"etag": '"v2"', "last_modified": "Tue, 02 Jan 2024 00:00:00 GMT"}[validator])
    now[0] += 11
    assert (yield _get(backend, "initrd")) == b"two" * 2000
    assert len(origin.seen) == 3
    (data,) = _stored(cache_dir)
    assert data != data_files[0]
    stored = _index(cache_dir)["initrd"]
    assert stored["data"] == data
    assert stored[validator] == getattr(spec, validator) and stored["size"] == 6000


@pytest_twisted.inlineCallbacks
def test_an_origin_error_on_revalidation_serves_the_cached_copy_but_404_drops_it(cache, origin, cache_dir):
    now = [0.0]
    backend = cache(clock=lambda: now[0], revalidate=1)
    spec = origin.add("f", b"cached", etag='"1"')
    assert (yield _get(backend, "f")) == b"cached"
    spec.status = 503
    now[0] += 2
    assert (yield _get(backend, "f")) == b"cached"
    del origin.files["/boot/f"]
    now[0] += 2
    with pytest.raises(errors.FileNotFound):
        yield _get(backend, "f")
    assert _stored(cache_dir) == [] and backend.keys() == []


@pytest_twisted.inlineCallbacks
def test_concurrent_requests_for_a_stale_entry_revalidate_once(cache, origin):
    now = [0.0]
    backend = cache(clock=lambda: now[0], revalidate=1)
    origin.add("cfg", b"menu", etag='"e"', delay=0.01)
    yield _get(backend, "cfg")
    now[0] += 2
    readers = yield DeferredList([backend.get_reader("cfg", None) for _ in range(20)], fireOnOneErrback=True)
    for _, reader in readers:
        assert (yield slurp(reader)) == b"menu"
    assert len(origin.seen) == 2 and origin.seen[1].if_none_match == b'"e"'


@pytest_twisted.inlineCallbacks
def test_a_file_larger_than_the_cache_is_served_not_kept(cache, origin, cache_dir):
    body = _body(4, 50000)
    origin.add("huge", body)
    backend = cache(max_size=40000)
    assert (yield _get(backend, "huge")) == body
    assert _stored(cache_dir) == [] and os.listdir(cache_dir / "tmp") == []


@pytest_twisted.inlineCallbacks
def test_a_truncated_response_is_never_cached(serve, cache, origin, cache_dir):
    body = _body(2, 400000)
    spec = origin.add("cut.bin", body, truncate_at=150000)
    svc = serve(backend=cache())
    client = _listen()
    try:
        with pytest.raises(RuntimeError, match="ERROR 0"):
            yield rawclient.download(client, ("127.0.0.1", svc.bound_port), "cut.bin", {"blksize": "8192"})
    finally:
        client.close()
    backend = svc.backend
    yield backend.idle()
    assert _stored(cache_dir) == [] and os.listdir(cache_dir / "tmp") == []
    spec.truncate_at = None
    assert (yield _get(backend, "cut.bin")) == body
    assert len(origin.seen) == 2 and len(_stored(cache_dir)) == 1


@pytest_twisted.inlineCallbacks
def test_eviction_keeps_the_most_recently_used_and_spares_readers(cache, origin, cache_dir):
    files = {name: _body(i, 100000) for i, name in enumerate("abcde")}
    for name, body in files.items():
        origin.add(name, body)
    backend = cache(max_size=350000)
    for name in "abc":
        yield _get(backend, name)
    yield _get(backend, "a")  # b is now the least recently used
    yield _get(backend, "d")
    keys = [k.rsplit("/", 1)[1] for k in backend.keys()]
    assert keys == ["c", "a", "d"] and backend.store.used == 300000
    assert len(_stored(cache_dir)) == 3
    held = yield backend.get_reader("c", None)
    yield _get(backend, "a")
    yield _get(backend, "d")
    assert [k.rsplit("/", 1)[1] for k in backend.keys()] == ["c", "a", "d"]
    yield _get(backend, "e")  # c is the least recently used, but being read
    assert [k.rsplit("/", 1)[1] for k in backend.keys()] == ["c", "d", "e"]
    assert (yield slurp(held)) == files["c"]
    requests = len(origin.seen)
    yield _get(backend, "d")
    assert len(origin.seen) == requests
    yield _get(backend, "b")
    assert len(origin.seen) == requests + 1


@pytest_twisted.inlineCallbacks
def test_a_restart_keeps_a_warm_cache(cache, origin, cache_dir):
    origin.add("a", b"A" * 5000)
    origin.add("b", b"B" * 7000)
    first = cache()
    yield _get(first, "a")
    yield _get(first, "b")
    yield _get(first, "a")
    second = cache()
    assert [k.rsplit("/", 1)[1] for k in second.keys()] == ["b", "a"] and second.store.used == 12000
    assert (yield _get(second, "a")) == b"A" * 5000
    assert (yield _get(second, "b")) == b"B" * 7000
    assert len(origin.seen) == 2


@pytest_twisted.inlineCallbacks
def test_damaged_entries_are_dropped_at_start_or_by_the_background_check(cache, origin, cache_dir):
    for name, body in (("rewritten", b"good"), ("short", b"long"), ("rotten", b"fine")):
        origin.add(name, body * 1000)
    first = cache()
    for name in ("rewritten", "short", "rotten"):
        yield _get(first, name)
    yield first.stop()  # the next start is alone on the directory: a cold start
    index = _index(cache_dir)
    (cache_dir / index["rewritten"]["data"]).write_bytes(b"evil" * 1000)  # same size, written since
    (cache_dir / index["short"]["data"]).write_bytes(b"lo")
    rotten = cache_dir / index["rotten"]["data"]
    st = rotten.stat()
    rotten.write_bytes(b"rot!" * 1000)
    os.utime(rotten, ns=(st.st_atime_ns, st.st_mtime_ns))  # silent damage: size and time as they were
    (cache_dir / "tmp" / "leftover").write_bytes(b"x")
    (cache_dir / "0123.orphan.data").write_bytes(b"x")
    second = cache()
    assert [k.rsplit("/", 1)[1] for k in second.keys()] == ["rotten"]  # served at once, checked meanwhile
    assert os.listdir(cache_dir / "tmp") == [] and not (cache_dir / "0123.orphan.data").exists()
    yield until(lambda: second.store.verifier.pending == 0)
    assert second.keys() == []
    for name, body in (("rewritten", b"good"), ("short", b"long"), ("rotten", b"fine")):
        assert (yield _get(second, name)) == body * 1000
    assert len(origin.seen) == 6
    assert (yield _get(second, "rotten")) == b"fine" * 1000 and len(origin.seen) == 6


@pytest_twisted.inlineCallbacks
def test_after_a_restart_a_cached_file_is_served_before_its_checksum_is_checked(cache, origin, cache_dir,
                                                                                monkeypatch):
    """The first client of a large file after a restart does not wait for it
    to be hashed: the check runs in the background (here held until the
    first block has been read)."""
    body = _body(8, 16 << 20)
    origin.add("big.iso", body)
    first = cache()
    yield _get(first, "big.iso")
    yield first.stop()
    release, hashed = threading.Event(), []
    real = verify.sha256_of

    def held(path, stopping=lambda: False):
        release.wait(10)
        hashed.append(os.path.basename(path))
        return real(path, stopping)

    monkeypatch.setattr(verify, "sha256_of", held)
    second = cache()
    try:
        reader = yield second.get_reader("big.iso", None)
        assert reader.read(1468) == body[:1468] and hashed == []
        assert second.store.verifier.pending == 1
    finally:
        release.set()
    assert (yield slurp(reader)) == body[1468:]
    yield until(lambda: second.store.verifier.pending == 0)
    assert hashed == _stored(cache_dir) and len(second.keys()) == 1 and len(origin.seen) == 1


@pytest_twisted.inlineCallbacks
def test_hits_fills_and_downloads_not_cached_are_counted(serve, cache, origin):
    origin.add("small", b"s" * 3000)
    origin.add("large", _body(5, 60000))
    backend = cache(max_size=50000)
    svc = serve(backend=RemapBackend(ChainBackend([MemoryBackend({}), backend]), []))  # wrappers pass it on
    server = ("127.0.0.1", svc.bound_port)
    for name in ("small", "small", "large", "small"):
        c = _listen()
        try:
            data, _, _ = yield rawclient.download(c, server, name, {"blksize": "1468"})
        finally:
            c.close()
        assert data == origin.files["/boot/" + name].body
        yield backend.idle()  # stored: the next one is a hit
    counters = svc.stats.get_all_counters()
    assert (counters["cache_hits"], counters["cache_fills"], counters["cache_uncached"]) == (2, 1, 1)


def test_a_cache_directory_of_0_1_is_emptied_at_first_start(cache, cache_dir):
    cache_dir.mkdir()
    name = "ab" * 32
    (cache_dir / (name + ".json")).write_text('{"version": 1}')
    (cache_dir / (name + ".0123456789ab.data")).write_bytes(b"x")
    (cache_dir / "notes.txt").write_text("not the cache's")
    backend = cache()
    assert backend.keys() == [] and _stored(cache_dir) == []
    assert sorted(os.listdir(cache_dir)) == ["lock", "notes.txt", "tmp", "users"]


def test_options_build_a_cache_in_front_of_http(tmp_path):
    o = Options()
    o.parseOptions(["--backend", "http:http://127.0.0.1:8080/boot/", "--cache-dir", str(tmp_path / "c"),
                    "--cache-size", "64M", "--cache-revalidate", "30", "--http-timeout", "2"])
    backend = built(o)
    assert isinstance(backend, CacheBackend)
    assert (backend.store.max_size, backend.revalidate, backend.origin.timeout) == (64 << 20, 30.0, 2.0)
    assert not os.path.exists(tmp_path / "c")  # building touches nothing: starting does
    backend.start()
    assert os.path.isdir(tmp_path / "c" / "tmp")
    return backend.stop()


@pytest.mark.parametrize("args,words", [
    (("--http-timeout", "0"), "--http-timeout"),
    (("--cache-size", "lots"), "--cache-size"),
    (("--cache-revalidate", "-1"), "--cache-revalidate"),
])
def test_bad_cache_options(tmp_path, args, words):
    from twisted.python import usage
    with pytest.raises(usage.UsageError, match=words):
        Options().parseOptions(["--backend", "http:http://127.0.0.1/", *args])


@pytest_twisted.inlineCallbacks
def test_curl_through_http_and_the_cache(serve, origin, tmp_path):
    try:
        clients.require("curl")
    except clients.Unsupported as e:
        pytest.skip(str(e))
    body = _body(3, 3 * 1024 * 1024 + 11)
    origin.add("ipxe/boot.efi", body, chunk=65536, delay=0.001)
    backend = backends.from_spec("http:" + origin.base, reactor=reactor, cache_dir=str(tmp_path / "c"),
                                 cache_size=1 << 30, cache_revalidate=60)
    try:
        svc = serve(backend=backend)
        for attempt in ("miss", "hit"):
            out = tmp_path / attempt
            res = yield deferToThread(clients.download, "curl", "127.0.0.1", svc.bound_port, "ipxe/boot.efi",
                                      out, blksize=1468, timeout=60)
            res.check()
            assert out.read_bytes() == body
            yield backend.idle()
        assert len(origin.seen) == 1
    finally:
        yield backend.origin.stop()


@pytest.mark.parametrize("cached", [False, True], ids=["http", "http+cache"])
@pytest_twisted.inlineCallbacks
def test_stopping_the_service_leaves_no_connection_or_timer_behind(origin, tmp_path, cached):
    """The service owns its backend's lifecycle: stopping it closes the origin's
    pooled connections and cancels every timer its sessions and fetches set."""
    from twisted.internet import tcp

    def ours():
        calls = {c for c in reactor.getDelayedCalls() if c.active()}
        conns = {r for r in reactor.getReaders() + reactor.getWriters() if isinstance(r, tcp.Client)}
        return calls, conns

    body = _body(7, 200_000)
    origin.add("initrd", body)
    calls_before, conns_before = ours()
    backend = backends.from_spec("http:" + origin.base, reactor=reactor,
                                 cache_dir=str(tmp_path / "c") if cached else None)
    svc = TFTPService(backend, reactor, 0, ["127.0.0.1"], ServerConfig(dally=0.05, shutdown_grace=0))
    svc.startService()
    c = _listen()
    data, _, _ = yield rawclient.download(c, ("127.0.0.1", svc.bound_port), "initrd", {"blksize": "1468"})
    yield c.close()
    assert data == body
    calls, conns = ours()
    assert conns - conns_before, "the origin connection is pooled while serving"
    yield svc.stopService()
    yield deferLater(reactor, 0.05, lambda: None)  # closing connections takes a turn
    calls, conns = ours()
    assert conns - conns_before == set()
    assert {c for c in calls - calls_before if c.getTime() > reactor.seconds() + 0.1} == set()


@pytest_twisted.inlineCallbacks
def test_two_caches_on_one_directory_fetch_a_miss_once(cache, origin, cache_dir):
    """Two processes' caches, as flock sees them: the second follows the first's fill."""
    body = _body(20, 700_000)
    gate = Deferred()
    origin.add("kernel", body, gate=gate, gate_after=100_000, chunk=50_000)
    one, two = cache(), cache()
    first = yield one.get_reader("kernel", None)
    second = two.get_reader("kernel", None)  # waits on the other cache's fill
    yield until(lambda: origin.sent.get("/boot/kernel", 0) >= 100_000)
    gate.callback(None)
    second = yield second
    assert first.size == second.size == len(body)
    assert (yield slurp(first)) == body and (yield slurp(second)) == body
    yield one.idle()
    yield two.idle()
    assert len(origin.seen) == 1 and len(_stored(cache_dir)) == 1
    assert (yield _get(two, "kernel")) == body and len(origin.seen) == 1


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
@pytest_twisted.inlineCallbacks
def test_a_write_error_midway_sends_the_readers_to_the_origin(serve, cache, origin, tmp_path, ranges):
    from .cachelab import Tmpfs
    disk = Tmpfs(tmp_path / "small", "3m")
    try:
        body = _body(21, 2_000_000)
        gate = Deferred()
        origin.add("initrd", body, gate=gate, gate_after=400_000, chunk=50_000, etag='"i1"', ranges=ranges)
        svc = serve(backend=cache(directory=disk.path))
        clients_ = [_listen() for _ in range(20)]
        downloads = [rawclient.download(c, ("127.0.0.1", svc.bound_port), "initrd", {"blksize": "8192"})
                     for c in clients_]
        yield until(lambda: all(c.received for c in clients_))
        disk.fill()
        gate.callback(None)
        results = yield DeferredList(downloads, fireOnOneErrback=True, consumeErrors=True)
        for c in clients_:
            c.close()
        assert all(data == body for _, (data, _, _) in results)
        again = [s for s in origin.seen if s.range is not None]
        assert len(origin.whole("initrd")) == 1 and 1 <= len(again) <= 20
        assert all(s.if_range == b'"i1"' for s in again)
        assert svc.stats.get_counter("cache_uncached") == len(again)
        yield svc.backend.idle()
        assert os.listdir(disk.path / "tmp") == [] and _stored(disk.path) == []
    finally:
        disk.unmount()


@pytest_twisted.inlineCallbacks
def test_a_file_that_changes_on_the_origin_is_never_spliced(cache, origin, tmp_path):
    from .cachelab import Tmpfs
    disk = Tmpfs(tmp_path / "small", "4m")
    try:
        old, new = _body(22, 1_500_000), _body(23, 1_500_000)
        gate = Deferred()
        spec = origin.add("menu", old, gate=gate, gate_after=300_000, chunk=50_000, etag='"old"')
        backend = cache(directory=disk.path)
        reader = yield backend.get_reader("menu", None)
        head = yield reader.read(200_000)
        assert head == old[:200_000]
        disk.fill()
        spec.body, spec.etag = new, '"new"'
        gate.callback(None)
        with pytest.raises(errors.TFTPError):
            yield slurp(reader)
        (first, again) = origin.seen
        assert first.range is None and again.range == b"bytes=200000-" and again.if_range == b'"old"'
    finally:
        disk.unmount()


@pytest_twisted.inlineCallbacks
def test_a_body_of_unknown_length_outgrowing_the_cache_is_streamed(cache, origin, cache_dir):
    body = _body(24, 600_000)
    origin.add("stream", body, no_length=True, chunk=20_000, delay=0.001, etag='"s1"')
    backend = cache(max_size=100_000)
    largest = []
    sampler = LoopingCall(lambda: largest.append(
        sum(e.stat().st_size for e in os.scandir(cache_dir / "tmp")) if (cache_dir / "tmp").exists() else 0))
    sampler.start(0.001)
    try:
        assert (yield _get(backend, "stream")) == body
    finally:
        sampler.stop()
    assert 0 < max(largest) <= 100_000
    assert len(origin.whole("stream")) == 1 and len(origin.seen) == 2
    assert os.listdir(cache_dir / "tmp") == [] and _stored(cache_dir) == []


@pytest_twisted.inlineCallbacks
def test_without_validators_a_body_outgrowing_the_cache_fails_rather_than_be_spliced(cache, origin):
    """Past byte 0, only an ETag or a Last-Modified could tell whether the
    origin's file is still the one the reader began: without either, a
    reader the cache cannot keep fails (the client asks again) instead of
    going on from a file that may have changed meanwhile."""
    origin.add("stream", _body(32, 600_000), no_length=True, chunk=20_000, delay=0.001)
    backend = cache(max_size=100_000)
    with pytest.raises(errors.TFTPError):
        yield _get(backend, "stream")
    assert [s.range for s in origin.seen] == [None]  # no blind Range request


def _dead_fill(backend, name, body, written, reserve=None, etag='"d1"'):
    """The fill a process killed mid-way leaves: claimed, answered, ``written``
    bytes of ``body`` in its file, never committed (closing the file drops
    its lock, as the kernel does for a dead process)."""
    key = backend.origin.key(name)
    claim = backend.store.claim(key, entry_name(key), backend.fresh)
    size = reserve or len(body)
    assert backend.store.reserve(entry_name(key), claim.part, size, len(body), etag, None) == size
    os.write(claim.fd, body[:written])
    os.close(claim.fd)
    return claim.part


@pytest_twisted.inlineCallbacks
def test_a_fill_written_whole_by_a_filler_that_died_is_committed(cache, origin, cache_dir):
    """Killed after its last byte but before its commit: the file is whole,
    and the next process commits it without asking the origin for more."""
    body = _body(25, 300_000)
    origin.add("kernel", body, etag='"d1"')
    part = _dead_fill(cache(), "kernel", body, len(body))
    second = cache()
    assert (yield _get(second, "kernel")) == body
    assert origin.seen == []
    entry = _index(cache_dir)["kernel"]
    assert entry["size"] == len(body) and entry["sha256"] == hashlib.sha256(body).hexdigest()
    assert not (cache_dir / part).exists() and json.loads((cache_dir / "index.json").read_text())["fills"] == {}
    assert (yield _get(second, "kernel")) == body and origin.seen == []


@pytest_twisted.inlineCallbacks
def test_a_dead_fill_without_validators_is_fetched_again_whole_not_resumed(cache, origin, cache_dir):
    """Nothing says the origin's file is still the one the dead filler began
    (same size, no ETag, no Last-Modified): its bytes are dropped, the file
    comes whole from the origin, and the next request caches it afresh."""
    old, new = _body(33, 300_000), _body(34, 300_000)
    origin.add("script", new)
    part = _dead_fill(cache(), "script", old, 100_000, etag=None)
    second = cache()
    assert (yield _get(second, "script")) == new
    assert [s.range for s in origin.seen] == [b"bytes=0-"] and not (cache_dir / part).exists()
    assert (yield _get(second, "script")) == new
    assert [s.range for s in origin.seen] == [b"bytes=0-", None] and list(_index(cache_dir)) == ["script"]


@pytest_twisted.inlineCallbacks
def test_a_fill_whose_filler_died_gives_its_room_back(cache, origin, cache_dir):
    """A worker killed mid-fill leaves a record holding room; a fill of any
    other file that needs that room reclaims it."""
    big, other = _body(26, 80_000), _body(27, 50_000)
    origin.add("big", big, etag='"d1"')
    origin.add("other", other)
    backend = cache(max_size=100_000)
    part = _dead_fill(backend, "big", big, 10_000)
    assert (yield _get(backend, "other")) == other
    assert list(_index(cache_dir)) == ["other"] and not (cache_dir / part).exists()
    assert json.loads((cache_dir / "index.json").read_text())["fills"] == {}
    assert (yield _get(backend, "big")) == big  # fetched afresh, whole
    assert [s.range for s in origin.requests_for("big")] == [None]


@pytest_twisted.inlineCallbacks
def test_readers_following_a_fill_go_to_the_origin_when_its_takeover_cannot_keep_it(cache, origin):
    """A filler died after the origin's answer, before its first byte; the
    process that takes its fill over cannot set room aside (the index cannot
    be written): the readers that were following the fill go on from the
    origin instead of waiting for bytes that will never come."""
    import errno
    body = _body(31, 300_000)
    origin.add("initrd", body, etag='"d1"')
    filler = cache()
    key = filler.origin.key("initrd")
    claim = filler.store.claim(key, entry_name(key), filler.fresh)
    assert filler.store.reserve(entry_name(key), claim.part, len(body), len(body), '"d1"', None) == len(body)
    follower = cache()
    reader = yield follower.get_reader("initrd", None)
    read = slurp(reader)  # waits for the filler's bytes

    def no_room(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    follower.store.reserve = no_room
    os.close(claim.fd)  # the filler dies
    assert (yield read.addTimeout(5, reactor)) == body
    assert [s.if_range for s in origin.requests_for("initrd") if s.range] == [b'"d1"']


@pytest_twisted.inlineCallbacks
def test_a_body_of_unknown_length_evicts_only_for_its_bytes(cache, origin, cache_dir):
    """A generated script of a few bytes, sent chunked, must not empty a small
    cache; a larger one evicts what its bytes need, no more."""
    origin.add("a", _body(28, 100_000))
    origin.add("b", _body(29, 100_000))
    origin.add("menu.ipxe", b"#!ipxe\n", no_length=True)
    stream = _body(30, 150_000)
    origin.add("stream", stream, no_length=True, chunk=20_000)
    backend = cache(max_size=300_000)
    yield _get(backend, "a")
    yield _get(backend, "b")
    assert (yield _get(backend, "menu.ipxe")) == b"#!ipxe\n"
    assert sorted(_index(cache_dir)) == ["a", "b", "menu.ipxe"]
    assert (yield _get(backend, "stream")) == stream
    assert sorted(_index(cache_dir)) == ["b", "menu.ipxe", "stream"]
