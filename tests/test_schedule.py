import pytest

from txfbtftp._protocol.schedule import DEFAULT_SCHEDULE, RTOEstimator, Schedule, Watchdog


def test_parse_list_and_exponential_forms():
    assert Schedule.parse("1,2,4").waits == (1.0, 2.0, 4.0)
    assert Schedule.parse("0.5x4").waits == (0.5, 1.0, 2.0, 4.0)
    for bad in ("", "1,,2", "0", "-1", "1x0", "ax2", "1,x"):
        with pytest.raises(ValueError):
            Schedule.parse(bad)


def test_default_keeps_a_silent_client_for_about_a_minute():
    assert DEFAULT_SCHEDULE.total >= 60
    assert DEFAULT_SCHEDULE.waits[0] == 1


def test_based_on_scales_the_shape():
    assert Schedule.parse("1,2,4").based_on(3).waits == (3.0, 6.0, 12.0)


def test_watchdog_follows_the_schedule_then_gives_up():
    wd = Watchdog(Schedule.parse("1,2,4"))
    assert wd.progress(0) == 1
    assert [wd.expired(t) for t in (1, 3, 7)] == [2, 4, None]
    assert wd.progress(8) == 1 and wd.tries == 0


def test_rfc6298_estimator():
    est = RTOEstimator(floor=0.0)
    est.sample(0.1)
    assert est.srtt == pytest.approx(0.1) and est.rttvar == pytest.approx(0.05)
    assert est.rto == pytest.approx(0.3)
    est.sample(0.2)
    assert est.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)
    assert est.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)


def test_floor():
    est = RTOEstimator(floor=0.05)
    est.sample(0.0001)
    assert est.rto == 0.05


def test_adaptive_backoff_is_exponential_bounded_and_patient():
    est = RTOEstimator(floor=0.05)
    est.sample(0.001)
    wd = Watchdog(Schedule.parse("1,2,4,8"), est)
    assert wd.progress(0) == 0.05
    waits, now = [], 0.05
    while True:
        w = wd.expired(now)
        if w is None:
            break
        waits.append(w)
        now += w
    assert waits[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert max(waits) <= 8
    assert now == pytest.approx(15, abs=0.01)  # patience = the schedule's total
