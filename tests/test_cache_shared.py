"""One cache directory, several processes: ``--workers``, a worker killed
during a fill, a second server on the same directory, a disk that fills up,
a restart.  Real servers (``txfbtftp serve``), the real HTTP origin of
:mod:`tests.httporigin` on loopback, real clients; every byte checked."""
import os
import signal
import time

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall

from . import rawclient
from .cachelab import (Tmpfs, body, committed, entries, fetch, filler_of, metric, pause, pid_of_connection, processes,
                       serve, settle, wait_log)


@pytest.fixture
def tmpfs(servers, tmp_path):
    """Mounts a tmpfs of a given size as the cache directory; at the end the
    servers stop, then it is unmounted."""
    mounted = []

    def mount(size):
        mounted.append(Tmpfs(tmp_path / "cache", size))
        return mounted[-1]

    yield mount
    for s in servers:
        s.stop()
    for disk in mounted:
        disk.unmount()


def _served_by(server, name):
    """How many of ``name``'s sessions each process logged, by prefix ('' is the main process)."""
    counts = {}
    for line in server.log.splitlines():
        if "RRQ %r" % name in line:
            who = line.split("worker ", 1)[1].split(":", 1)[0] if "worker " in line else ""
            counts[who] = counts.get(who, 0) + 1
    return counts


@pytest_twisted.inlineCallbacks
def test_workers_share_one_cache_200_clients_on_a_cold_cache_make_one_origin_get(servers, origin, tmp_path):
    data = body(1, (1 << 20) + 7)
    gate = Deferred()
    origin.add("vmlinuz", data, gate=gate, gate_after=256 * 1024, chunk=65536)
    cache_dir = tmp_path / "cache"
    server = serve(servers, origin, cache_dir, workers=3)
    clients = [rawclient.listen() for _ in range(200)]
    for c in clients:
        c.transport.maxPacketSize = 65536
    try:
        downloads = [rawclient.download(c, ("127.0.0.1", server.port), "vmlinuz",
                                        {"blksize": "8192", "windowsize": "4", "tsize": "0"}) for c in clients]
        yield settle(lambda: all(c.received for c in clients), what="every client answered")
        assert len(origin.requests_for("vmlinuz")) == 1  # every process is waiting on that one fill
        gate.callback(None)
        results = yield DeferredList(downloads, fireOnOneErrback=True, consumeErrors=True)
    finally:
        for c in clients:
            c.close()
    for _, (got, oack, _) in results:
        assert got == data and oack["tsize"] == str(len(data))
    assert len(origin.requests_for("vmlinuz")) == 1
    yield settle(lambda: committed(cache_dir), what="the fill committed")
    index, bodies, _ = entries(cache_dir)
    assert len(index["entries"]) == 1 and index["fills"] == {} and len(bodies) == 1
    assert (cache_dir / bodies[0]).read_bytes() == data
    yield wait_log(server, "RRQ 'vmlinuz'", count=200)
    by = _served_by(server, "vmlinuz")
    assert sorted(by) == ["", "1", "2"] and sum(by.values()) == 200, by  # all three processes served
    assert (yield fetch(server, "vmlinuz")) == data and len(origin.requests_for("vmlinuz")) == 1
    assert (yield metric(server, "tftp_cache_fills_total")) == 1


@pytest_twisted.inlineCallbacks
def _fill_on_the_worker(server, origin, data, cache_dir):
    """Ask for new names until a request lands on the worker, which is then
    filling: ``(name, gate, first download, worker pid)``, held at 1 MiB."""
    main, (worker,) = processes(server)
    for attempt in range(12):
        name, gate = "initrd%d" % attempt, Deferred()
        origin.add(name, data, gate=gate, gate_after=1 << 20, chunk=65536, etag='"%s"' % name)
        first = fetch(server, name, attempts=3)
        yield settle(lambda name=name: origin.sent.get("/boot/" + name, 0) >= 1 << 20, what="the fill under way")
        (seen,) = origin.requests_for(name)
        # Both must say so: the connection the origin saw, and the fill's lock.
        if pid_of_connection(seen.client_port, [main, worker]) == worker and filler_of(cache_dir, name) == worker:
            return name, gate, first, worker
        gate.callback(None)
        assert (yield first) == data
    pytest.fail("no request reached the worker")


def _entry(cache_dir, name):
    index, _, _ = entries(cache_dir)
    (entry,) = [e for e in index["entries"].values() if e["key"].endswith("/" + name)]
    return (cache_dir / entry["data"]).read_bytes()


@pytest_twisted.inlineCallbacks
def test_a_worker_killed_during_its_fill_another_process_finishes_it(servers, origin, tmp_path):
    data = body(2, 4 << 20)
    cache_dir = tmp_path / "cache"
    server = serve(servers, origin, cache_dir, workers=2)
    name, gate, first, worker = yield _fill_on_the_worker(server, origin, data, cache_dir)
    others = [fetch(server, name, attempts=3) for _ in range(40)]
    yield pause(0.5)  # the others have asked, and wait past the first MiB
    spec, resumed = origin.files["/boot/" + name], Deferred()
    spec.gate, spec.gate_after = resumed, 2 << 20  # the rest, once asked for, pauses at 2 MiB
    os.kill(worker, signal.SIGKILL)
    gate.callback(None)
    yield settle(lambda: origin.sent.get("/boot/" + name, 0) >= 2 << 20, what="the fill taken over")
    # The worker is restarted while the main process fills: it leaves that fill alone.
    yield wait_log(server, "TFTP server listening on", count=3)
    yield wait_log(server, "shared with a running server", count=2)
    index, _, parts = entries(cache_dir)
    assert len(index["fills"]) == 1 and parts == [os.path.basename(index["fills"].popitem()[1]["part"])]
    resumed.callback(None)
    results = yield DeferredList([first] + others, consumeErrors=True)
    for ok, got in results:
        assert ok, got
        assert got == data
    requests = origin.requests_for(name)
    assert len(requests) == 2 and requests[0].range is None
    assert requests[1].range is not None and requests[1].range.startswith(b"bytes=")  # taken over midway
    yield wait_log(server, "the process fetching it is gone")
    yield settle(lambda: committed(cache_dir), what="the fill committed")
    assert _entry(cache_dir, name) == data
    assert (yield fetch(server, name)) == data and len(origin.requests_for(name)) == 2  # a hit now


@pytest_twisted.inlineCallbacks
def test_a_fill_left_by_a_killed_worker_is_taken_over_by_the_next_request(servers, origin, tmp_path):
    data = body(7, 3 << 20)
    cache_dir = tmp_path / "cache"
    server = serve(servers, origin, cache_dir, workers=2)
    name, gate, first, worker = yield _fill_on_the_worker(server, origin, data, cache_dir)
    os.kill(worker, signal.SIGKILL)  # nobody follows that fill: it stays, with its first MiB
    gate.callback(None)
    yield wait_log(server, "TFTP server listening on", count=3)
    index, _, parts = entries(cache_dir)
    assert len(index["fills"]) == 1 and len(parts) == 1
    got = yield DeferredList([first] + [fetch(server, name, attempts=3) for _ in range(10)], consumeErrors=True)
    assert got == [(True, data)] * 11
    requests = origin.requests_for(name)
    assert len(requests) == 2 and requests[1].range.startswith(b"bytes=")
    assert 0 < int(requests[1].range[6:-1]) <= 1 << 20  # from what the dead worker had written
    yield settle(lambda: committed(cache_dir), what="the fill committed")
    assert _entry(cache_dir, name) == data and entries(cache_dir)[0]["fills"] == {}


@pytest_twisted.inlineCallbacks
def test_a_second_server_on_the_same_directory_shares_the_cache(servers, origin, tmp_path):
    data = body(3, (2 << 20) + 3)
    gate = Deferred()
    origin.add("grubx64.efi", data, gate=gate, gate_after=300_000, chunk=65536)
    cache_dir = tmp_path / "cache"
    one = serve(servers, origin, cache_dir, workers=2)
    two = serve(servers, origin, cache_dir)
    yield wait_log(two, "shared with a running server")
    pending = [fetch(s, "grubx64.efi") for s in (one, two) for _ in range(20)]
    yield settle(lambda: origin.sent.get("/boot/grubx64.efi", 0) >= 300_000, what="the fill under way")
    yield pause(0.5)
    gate.callback(None)
    for got in (yield DeferredList(pending, fireOnOneErrback=True, consumeErrors=True)):
        assert got[1] == data
    assert len(origin.requests_for("grubx64.efi")) == 1
    yield settle(lambda: committed(cache_dir), what="the fill committed")
    index, bodies, _ = entries(cache_dir)
    assert len(index["entries"]) == 1 and len(bodies) == 1 and (cache_dir / bodies[0]).read_bytes() == data
    two.signal(signal.SIGTERM)
    assert two.wait() == 0
    assert (yield fetch(one, "grubx64.efi")) == data
    assert len(origin.requests_for("grubx64.efi")) == 1


@pytest_twisted.inlineCallbacks
def test_a_disk_that_fills_up_never_fails_a_client(servers, origin, tmpfs):
    disk = tmpfs("6m")
    big = body(4, 8 << 20)  # larger than the disk
    origin.add("big.iso", big, chunk=65536)
    grows = body(5, 3 << 20)
    gate = Deferred()
    origin.add("grows.img", grows, gate=gate, gate_after=512 * 1024, chunk=65536, etag='"grows"')
    server = serve(servers, origin, disk.path, workers=2, extra=["--cache-size", "64M"])
    # Larger than the disk: every client streams from the origin, nothing is written.
    largest = []
    watch = LoopingCall(lambda: largest.append(sum(e.stat().st_size for e in os.scandir(disk.path / "tmp"))))
    watch.start(0.002)
    got = yield DeferredList([fetch(server, "big.iso") for _ in range(8)], consumeErrors=True)
    watch.stop()
    assert [g for g in got] == [(True, big)] * 8
    assert max(largest) == 0 and len(origin.requests_for("big.iso")) == 8  # a stream each
    # The disk fills up (someone else's file) while a fill is being written.
    pending = [fetch(server, "grows.img") for _ in range(20)]
    yield settle(lambda: origin.sent.get("/boot/grows.img", 0) >= 512 * 1024, what="the fill under way")
    yield pause(0.3)
    disk.fill()
    started = time.monotonic()
    gate.callback(None)
    got = yield DeferredList(pending, consumeErrors=True)
    elapsed = time.monotonic() - started
    assert [g for g in got] == [(True, grows)] * 20
    ranged = [s for s in origin.requests_for("grows.img") if s.range is not None]
    print("disk full midway: 20 clients done in %.2fs, %d went on from the origin" % (elapsed, len(ranged)))
    assert len(origin.whole("grows.img")) == 1 and 1 <= len(ranged) <= 20
    uncached = yield metric(server, "tftp_cache_uncached_total")
    assert uncached == 8 + len(ranged)
    said = server.log.count("served from the origin, not cached")
    assert 1 <= said <= 2 * 3  # once per process and reason, not once per client
    assert "ERROR" not in server.log
    # Room again: the file is cached, a later client is a hit.
    os.unlink(disk.path / "ballast")
    assert (yield fetch(server, "grows.img")) == grows
    yield settle(lambda: entries(disk.path)[1] != [] and committed(disk.path), what="the fill committed")
    before = len(origin.requests_for("grows.img"))
    started = time.monotonic()
    got = yield DeferredList([fetch(server, "grows.img") for _ in range(20)], consumeErrors=True)
    assert got == [(True, grows)] * 20 and len(origin.requests_for("grows.img")) == before
    print("the same 20 clients from the cache: %.2fs" % (time.monotonic() - started))


@pytest_twisted.inlineCallbacks
def test_a_small_disk_evicts_before_writing(servers, origin, tmpfs):
    disk = tmpfs("5m")  # room for two files and the margin, not three
    files = {name: body(10 + i, 1536 * 1024) for i, name in enumerate(("a", "b", "c"))}
    for name, data in files.items():
        origin.add(name, data)
    server = serve(servers, origin, disk.path, workers=2, extra=["--cache-size", "1G"])

    def cached():
        return sorted(e["key"].rsplit("/", 1)[1] for e in entries(disk.path)[0]["entries"].values())

    for name in ("a", "b", "c"):
        assert (yield fetch(server, name)) == files[name]
        yield settle(lambda: committed(disk.path), what="the fill committed")
    assert cached() == ["b", "c"] and len(entries(disk.path)[1]) == 2
    assert (yield fetch(server, "c")) == files["c"] and len(origin.requests_for("c")) == 1
    assert (yield metric(server, "tftp_cache_uncached_total")) == 0


@pytest_twisted.inlineCallbacks
def test_after_a_restart_the_first_client_of_a_64mib_file_starts_at_once(servers, origin, tmp_path):
    data = body(6, 64 << 20)
    origin.add("rootfs.img", data, chunk=1 << 20)
    cache_dir = tmp_path / "cache"
    first = serve(servers, origin, cache_dir, workers=2)
    options = {"blksize": "65464"}
    assert (yield fetch(first, "rootfs.img", options)) == data
    yield settle(lambda: committed(cache_dir), what="the fill committed")
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    second = serve(servers, origin, cache_dir, workers=2)
    c = rawclient.listen()
    c.transport.maxPacketSize = 65536
    try:
        started = time.monotonic()
        c.send(rawclient.packet.request(rawclient.packet.RRQ, "rootfs.img", "octet", {"blksize": "1468"}),
               ("127.0.0.1", second.port))
        oack, tid = yield c.recv()
        c.send(rawclient.packet.ack(0), tid)
        block, _ = yield c.recv_from(tid)
        first_data = time.monotonic() - started
        c.send(rawclient.packet.error(0, "enough"), tid)
    finally:
        yield c.close()
    assert block[:4] == b"\0\3\0\1" and block[4:] == data[:1468]
    assert first_data < 1.0, first_data
    yield wait_log(second, "cache: checked 1 bodies")
    assert len(origin.requests_for("rootfs.img")) == 1
    print("time to the first DATA after a restart: %.3fs" % first_data)
