"""Lock-free hand-off between exactly two threads: a bounded ring, a latest-item mailbox, a wakeup.

Owns the data path between the frame source, the perception thread and the generation thread
(ARCHITECTURE 2.2): the source puts frames into a `LatestMailbox` (a newer frame replaces an unread
one), perception publishes "frame k is ready" through an `SPSCRing` whose slots can own storage
(the visual-memory slot index), and a `Wakeup` lets an idle consumer sleep with a timeout instead of
busy-waiting (trap 7). It knows nothing of frames, tensors or models: items are opaque objects.

Why no locks: in CPython a store of a reference or of an int to an attribute is one bytecode and is
never seen half-done by another thread, and the interpreter never reorders a thread's stores as
seen by another thread. Each counter below has exactly ONE writer thread (the producer writes
`_head`, the consumer writes `_tail`), so a read-modify-write like `self._head += 1` cannot lose an
update: nobody else stores to that attribute. The one place where both threads remove the same
item (the mailbox) uses `dict.pop`, a single C call that either thread completes entirely before
the other starts. Neither structure supports a second producer or a second consumer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_SLOT = object()  # default for publish(): "the item is the slot index itself"


class SPSCRing(Generic[T]):
    """A bounded single-producer / single-consumer ring of `capacity` slots.

    `_head` counts items ever published (producer-owned), `_tail` items ever released (consumer-
    owned); both only grow, so `head - tail` is the fill level and `counter % capacity` the slot.
    A slot becomes writable again only when the consumer calls `advance()`, i.e. after it finished
    using the item or the storage the slot stands for: the producer can never overwrite data that
    is being read. `None` cannot be an item (it means "empty").

    Producer API: `try_push(item)`, or the two-phase zero-copy `producer_slot()` + `publish()`.
    Consumer API: `peek()` + `advance()`, or `pop()`; `consumer_slot()` for storage-owning use.
    """

    def __init__(self, capacity: int, wakeup: Wakeup | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._slots: list[T | None] = [None] * capacity
        self._head = 0  # items published; written only by the producer
        self._tail = 0  # items released; written only by the consumer
        self._dropped = 0  # pushes refused because full; written only by the producer
        self._wakeup = wakeup  # notified after each publish, so a sleeping consumer wakes at once

    # -- producer side ---------------------------------------------------------------------------
    def try_push(self, item: T) -> bool:
        """Append `item` if a slot is free; never blocks. False (and one more drop) when full."""
        if item is None:
            raise ValueError("None cannot be pushed: it means 'empty' to peek() and pop()")
        if self.producer_slot() is None:
            self._dropped += 1
            return False
        self.publish(item)
        return True

    def producer_slot(self) -> int | None:
        """Index of the slot the producer may fill now, or None when the ring is full.

        Calling it twice without `publish()` returns the same slot; it reserves nothing and counts
        no drop (call `record_drop()` if the producer gives the item up).
        """
        head = self._head
        if head - self._tail >= self.capacity:  # _tail only grows: a stale read is merely pessimistic
            return None
        return head % self.capacity

    def publish(self, item: object = _SLOT) -> None:
        """Make the slot returned by `producer_slot()` visible to the consumer.

        `item` is what `peek()` will return; by default the slot index itself, for storage-owning
        use where the data already lies in the caller's preallocated slot.
        """
        head = self._head
        if head - self._tail >= self.capacity:
            raise RuntimeError("publish() on a full ring: call producer_slot() first")
        slot = head % self.capacity
        self._slots[slot] = slot if item is _SLOT else item  # type: ignore[assignment]
        # The slot is written BEFORE the head moves: the consumer reads the head, then the slot, so it
        # can never see the new head with the old slot content.
        self._head = head + 1
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.notify()

    def record_drop(self) -> None:
        """Count an item the producer gave up because `producer_slot()` returned None."""
        self._dropped += 1

    # -- consumer side ---------------------------------------------------------------------------
    def peek(self) -> T | None:
        """The oldest published item, left in place (its slot stays reserved), or None if empty."""
        tail = self._tail
        if self._head == tail:
            return None
        return self._slots[tail % self.capacity]

    def consumer_slot(self) -> int | None:
        """Slot index of the oldest published item, or None if empty."""
        tail = self._tail
        if self._head == tail:
            return None
        return tail % self.capacity

    def advance(self) -> None:
        """Release the oldest item's slot to the producer. Call only after being done with it."""
        tail = self._tail
        if self._head == tail:
            raise RuntimeError("advance() on an empty ring")
        # Drop our reference BEFORE moving the tail: once the tail moves the producer may store a
        # new item here, and clearing after that would erase it.
        self._slots[tail % self.capacity] = None
        self._tail = tail + 1

    def pop(self) -> T | None:
        """`peek()` then `advance()`: the oldest item, or None if empty."""
        item = self.peek()
        if item is not None:
            self.advance()
        return item

    # -- either side (snapshots) -----------------------------------------------------------------
    def __len__(self) -> int:
        return self._head - self._tail

    @property
    def pushed(self) -> int:
        """Items published so far."""
        return self._head

    @property
    def popped(self) -> int:
        """Items released by the consumer so far."""
        return self._tail

    @property
    def dropped(self) -> int:
        """Items refused because the ring was full."""
        return self._dropped


class LatestMailbox(Generic[T]):
    """Holds at most one item: `put` replaces an unread one (counting `replaced`), `take` empties it.

    The race between `put` and `take`: both remove the current item with `dict.pop`, which is one
    atomic C call, so every item that was put leaves the box exactly once, either to the consumer
    (`taken`) or to the producer that replaced it (`replaced`), or it is still inside. Hence
    `puts == taken + replaced + (1 if an item is left)` holds exactly, and the consumer never gets
    an item twice. Between the producer's pop and its store the box is briefly empty; a `take` in
    that window returns None and the consumer is woken by the notify that follows the store. Only
    the producer ever stores, so no store can overwrite an item without first popping it; and with
    a single producer each taken item is newer than the previous one. `None` cannot be an item.
    """

    _KEY = "item"

    def __init__(self, wakeup: Wakeup | None = None) -> None:
        self._box: dict[str, T] = {}
        self._puts = 0  # written only by the producer
        self._replaced = 0  # written only by the producer
        self._taken = 0  # written only by the consumer
        self._wakeup = wakeup

    def put(self, item: T) -> None:
        """Deliver `item`, replacing (and counting) an unread one. Never blocks."""
        if item is None:
            raise ValueError("None cannot be put: it means 'empty' to take()")
        if self._box.pop(self._KEY, None) is not None:
            self._replaced += 1
        self._box[self._KEY] = item
        self._puts += 1
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.notify()

    def take(self) -> T | None:
        """The newest unread item, or None."""
        item = self._box.pop(self._KEY, None)
        if item is not None:
            self._taken += 1
        return item

    def __bool__(self) -> bool:
        return self._KEY in self._box

    @property
    def puts(self) -> int:
        return self._puts

    @property
    def replaced(self) -> int:
        return self._replaced

    @property
    def taken(self) -> int:
        return self._taken


class Wakeup:
    """Lets an idle consumer sleep until a producer has news, without busy-waiting (trap 7).

    Only the sleeping path takes a lock (inside threading.Event); `notify()` skips even that when
    the flag is already set, so a producer publishing at a high rate pays one attribute read.
    Several producers (frame ring, question inbox) may share one Wakeup for the same consumer.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def notify(self) -> None:
        """Wake the consumer (now, or on its next wait). Safe from any thread."""
        if not self._event.is_set():
            self._event.set()

    def wait(self, timeout: float | None) -> bool:
        """Sleep until notified or `timeout` seconds pass; consumes the notification. True if notified.

        A notify landing between the wake and the clear is absorbed, so the caller must look at its
        queues after every wait (it would anyway); `wait_until` packages that loop correctly.
        """
        woke = self._event.wait(timeout)
        self._event.clear()
        return woke

    def wait_until(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Sleep until `ready()` is true, a notify arrives, or `timeout` passes; returns `ready()`.

        The flag is cleared BEFORE `ready()` is checked: a publish that lands between the check and
        the sleep sets the flag again, so the wakeup can never be lost.
        """
        self._event.clear()
        if ready():
            return True
        self._event.wait(timeout)
        return ready()


__all__ = ["SPSCRing", "LatestMailbox", "Wakeup"]
