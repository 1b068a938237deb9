"""The lock-free hand-offs hold their counts exactly when two threads hammer them."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine.queues import LatestMailbox, SPSCRing, Wakeup


def run_threads(*targets):
    errors: list[BaseException] = []

    def guard(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # surface a thread's failure in the test
                errors.append(e)

        return run

    threads = [threading.Thread(target=guard(t), name=f"t{i}") for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a test thread hung"
    if errors:
        raise errors[0]


def test_ring_basics():
    r: SPSCRing[str] = SPSCRing(2)
    assert r.pop() is None and r.peek() is None and len(r) == 0
    assert r.try_push("a") and r.try_push("b")
    assert not r.try_push("c")  # full: refused, never blocks
    assert (r.pushed, r.popped, r.dropped, len(r)) == (2, 0, 1, 2)
    assert r.peek() == "a" and r.peek() == "a"  # peek leaves it in place
    r.advance()
    assert r.pop() == "b" and r.pop() is None
    with pytest.raises(RuntimeError):
        r.advance()
    with pytest.raises(ValueError):
        r.try_push(None)  # None means "empty"
    with pytest.raises(ValueError):
        SPSCRing(0)


def test_ring_two_phase_slot_is_not_reused_until_advance():
    r = SPSCRing(2)
    s0 = r.producer_slot()
    assert s0 == 0 and r.producer_slot() == 0  # not reserved until published
    r.publish()
    assert r.peek() == 0  # default item: the slot index
    assert r.producer_slot() == 1
    r.publish("meta")  # slot 1, with a descriptor as the item
    assert r.producer_slot() is None  # full while the consumer still reads slot 0
    assert r.consumer_slot() == 0
    r.advance()
    assert r.producer_slot() == 0 and r.consumer_slot() == 1 and r.peek() == "meta"
    r.publish()  # slot 0 again: now full
    with pytest.raises(RuntimeError):
        r.publish()  # would overwrite the unread slot 1


def test_ring_million_items_keep_order_nothing_lost():
    n = 1_000_000
    wake = Wakeup()
    ring: SPSCRing[int] = SPSCRing(4096, wakeup=wake)
    refused = 0
    got: list[int] = []

    def produce():
        nonlocal refused
        for i in range(n):
            while not ring.try_push(i + 1):  # +1: 0 would be fine, but keep items truthy
                refused += 1  # the consumer keeps up; a full ring only delays, never loses

    def consume():
        append = got.append
        while len(got) < n:
            item = ring.pop()
            if item is None:
                wake.wait_until(lambda: len(ring) > 0, timeout=0.05)
                continue
            append(item)

    t0 = time.monotonic()
    run_threads(produce, consume)
    assert time.monotonic() - t0 < 30
    assert len(got) == n
    assert got == list(range(1, n + 1))  # nothing lost, nothing duplicated, order kept
    assert ring.pushed == n and ring.popped == n and len(ring) == 0
    assert ring.dropped == refused


def test_ring_slow_consumer_counts_drops_exactly():
    n = 1_000_000
    ring: SPSCRing[int] = SPSCRing(64)
    accepted: list[int] = []
    got: list[int] = []
    done = threading.Event()
    in_flight_ok = True

    def produce():
        nonlocal in_flight_ok
        for i in range(1, n + 1):
            if ring.try_push(i):
                accepted.append(i)
            if i % 1000 == 0:
                # pushed == popped + in flight, and never more in flight than slots
                size = len(ring)
                in_flight_ok &= 0 <= size <= ring.capacity
        done.set()

    def consume():
        k = 0
        while True:
            item = ring.pop()
            if item is None:
                if done.is_set() and len(ring) == 0:
                    return
                time.sleep(0.0005)
                continue
            got.append(item)
            k += 1
            if k % 50 == 0:
                time.sleep(0.001)  # slow consumer: the ring fills and pushes are refused

    run_threads(produce, consume)
    assert in_flight_ok
    assert ring.dropped > 0, "the consumer was meant to be slow enough to cause drops"
    assert len(accepted) > ring.capacity, "the consumer was meant to free slots while the producer ran"
    assert ring.dropped == n - len(accepted)  # exactly the pushes that returned False
    assert ring.pushed == len(accepted)
    assert ring.pushed == ring.popped + len(ring)
    assert got == accepted  # what got in came out, in order, once


def test_ring_slot_storage_is_never_overwritten_while_read():
    cap, n, width = 4, 20_000, 256
    store = np.zeros((cap, width), np.int64)  # the ring's slots own this storage
    ring = SPSCRing(cap)
    torn = 0
    seen: list[int] = []
    done = threading.Event()

    def produce():
        i = 1
        while i <= n:
            slot = ring.producer_slot()
            if slot is None:
                time.sleep(0)  # yield; a real producer would drop the frame
                continue
            store[slot, :] = i
            ring.publish((slot, i))
            i += 1
        done.set()

    def consume():
        nonlocal torn
        while not (done.is_set() and len(ring) == 0):
            item = ring.peek()
            if item is None:
                time.sleep(0)
                continue
            slot, i = item
            row = store[slot].copy() if len(seen) % 7 else store[slot]
            if len(seen) % 3 == 0:
                time.sleep(0)  # let the producer run while we still hold the slot
            if not (row == i).all():
                torn += 1
            seen.append(i)
            ring.advance()

    run_threads(produce, consume)
    assert torn == 0
    assert seen == list(range(1, n + 1))


def test_mailbox_keeps_only_latest_and_counts():
    m: LatestMailbox[int] = LatestMailbox()
    assert m.take() is None and not m
    m.put(1)
    m.put(2)
    assert m and m.replaced == 1
    assert m.take() == 2 and m.take() is None
    assert (m.puts, m.taken, m.replaced) == (2, 1, 1)
    with pytest.raises(ValueError):
        m.put(None)


def test_mailbox_two_threads_accounting_exact():
    n = 300_000
    wake = Wakeup()
    box: LatestMailbox[int] = LatestMailbox(wakeup=wake)
    taken: list[int] = []
    done = threading.Event()

    def produce():
        for i in range(1, n + 1):
            box.put(i)
            if i % 5000 == 0:
                time.sleep(0.0002)  # give the consumer chances to find the box full
        done.set()

    def consume():
        while True:
            item = box.take()
            if item is not None:
                taken.append(item)
                continue
            if done.is_set():
                return
            wake.wait_until(lambda: bool(box), timeout=0.01)

    run_threads(produce, consume)
    left = box.take()
    assert all(a < b for a, b in zip(taken, taken[1:], strict=False))  # each newer than the previous
    assert len(set(taken)) == len(taken)  # never twice
    assert len(taken) > 1 and box.replaced > 0
    assert box.taken == len(taken) + (1 if left is not None else 0)
    assert len(taken) + box.replaced + (1 if left is not None else 0) == n == box.puts
    if left is not None:
        assert left == n and (not taken or taken[-1] < left)


def test_wakeup_wakes_promptly_and_times_out():
    wake = Wakeup()
    t0 = time.monotonic()
    assert wake.wait(0.05) is False
    assert 0.04 <= time.monotonic() - t0 < 1.0
    wake.notify()
    assert wake.wait(5) is True  # a notify before the wait is not lost
    latency: list[float] = []

    def sleeper():
        t = time.monotonic()
        wake.wait(5)
        latency.append(time.monotonic() - t)

    th = threading.Thread(target=sleeper)
    th.start()
    time.sleep(0.05)
    wake.notify()
    th.join(5)
    assert latency and latency[0] < 1.0


def test_wakeup_ping_pong_never_loses_a_wakeup():
    rounds = 2000
    ring: SPSCRing[int] = SPSCRing(1, wakeup=(w_ab := Wakeup()))
    back: SPSCRing[int] = SPSCRing(1, wakeup=(w_ba := Wakeup()))
    slow: list[float] = []

    def ping():
        for i in range(1, rounds + 1):
            assert ring.try_push(i)
            t = time.monotonic()
            assert w_ba.wait_until(lambda: len(back) > 0, timeout=5), "lost wakeup"
            slow.append(time.monotonic() - t)
            assert back.pop() == i

    def pong():
        for _ in range(rounds):
            assert w_ab.wait_until(lambda: len(ring) > 0, timeout=5), "lost wakeup"
            assert back.try_push(ring.pop())

    run_threads(ping, pong)
    assert max(slow) < 1.0
