"""The timer wheel, under a fake clock."""
from twisted.internet.task import Clock

from txfbtftp._server.timers import Wheel


class Item:
    def __init__(self, wheel):
        self.wheel, self.fired, self.slot = wheel, [], None

    def arm(self, when):
        self.slot = self.wheel.arm(self, when)

    def wheel_fired(self, slot, now):
        if slot == self.slot:
            self.fired.append(now)


def test_fires_at_the_slot_boundary_at_or_after_the_deadline():
    clock = Clock()
    wheel = Wheel(clock, resolution=0.01)
    a, b = Item(wheel), Item(wheel)
    a.arm(1.0)
    b.arm(0.055)
    clock.advance(0.05)
    assert b.fired == [] and a.fired == []
    clock.advance(0.01)
    assert len(b.fired) == 1 and abs(b.fired[0] - 0.06) < 1e-9
    clock.advance(0.93)
    assert a.fired == [] and clock.seconds() < 1.0
    clock.advance(0.01)
    assert a.fired and abs(a.fired[0] - 1.0) < 1e-9


def test_one_reactor_call_per_occupied_slot_and_stale_entries_ignored():
    clock = Clock()
    wheel = Wheel(clock, resolution=0.01)
    items = [Item(wheel) for _ in range(100)]
    for it in items:
        it.arm(0.5)
    assert len(clock.getDelayedCalls()) == 1
    items[0].arm(0.2)  # moved earlier: the old entry stays behind, ignored
    clock.advance(0.2)
    assert len(items[0].fired) == 1 and abs(items[0].fired[0] - 0.2) < 1e-9
    clock.advance(0.3)
    assert all(len(it.fired) == 1 for it in items)
    assert clock.getDelayedCalls() == []


def test_stop_forgets_everything():
    clock = Clock()
    wheel = Wheel(clock)
    it = Item(wheel)
    it.arm(1)
    wheel.stop()
    clock.advance(2)
    assert it.fired == [] and clock.getDelayedCalls() == []


def test_an_item_refiled_during_a_pass_does_not_delay_earlier_slots():
    clock = Clock()
    wheel = Wheel(clock, resolution=0.01)

    class Refiler(Item):
        def wheel_fired(self, slot, now):
            super().wheel_fired(slot, now)
            if len(self.fired) == 1:
                self.arm(now + 0.3)

    first, waiting = Refiler(wheel), Item(wheel)
    first.arm(0.1)
    waiting.arm(0.2)
    clock.advance(0.1)
    assert len(first.fired) == 1
    clock.advance(0.1)
    assert len(waiting.fired) == 1, "the slot at 0.2 waited for the one at 0.4"
