"""Helpers shared by the statistics and metrics tests."""
import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater


def addr(svc):
    return ("127.0.0.1", svc.bound_port)


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


@pytest_twisted.inlineCallbacks
def wait_for(items, n=1):
    """Until ``items`` holds ``n`` entries (sessions end a moment after the client's last packet)."""
    for _ in range(200):
        if len(items) >= n:
            return
        yield sleep(0.01)
    raise AssertionError("only %d of %d" % (len(items), n))


def check_times(rec, exact_duration=None, first=True):
    """The wall-clock and reactor-clock fields are consistent; returns the rest of the record."""
    d = rec.as_dict()
    started, ended = d.pop("started_at"), d.pop("ended_at")
    duration, ttfp = d.pop("duration"), d.pop("time_to_first_packet")
    assert started <= ended <= time.time() and time.time() - started < 30
    if exact_duration is not None:
        assert duration == pytest.approx(exact_duration)
    else:
        assert 0 <= duration < 5
    if first:
        assert ttfp is not None and 0 <= ttfp <= duration
    else:
        assert ttfp is None
    return d


