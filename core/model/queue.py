"""The raise-hand Queue's order: raise order, or (Super Follows) the host's subscribers first.

``Space.hands`` is kept in queue order, so everything that shows or names a position (the view's
``queue``, ``#2`` in any command, the hand-raised reply, the chat bots' queue lists) reads one list
and agrees. With subscriber priority on, every hand whose ``Hand.subscriber`` is set stands ahead of
every other hand; inside each group the order is the order the hands went up. These functions only
order: whether a hand is a subscriber's is a fact the use case reads from storage and stores on
the Hand (``core/usecases/stage.py``), so the aggregate stays free of I/O.
"""

from __future__ import annotations

from collections.abc import Collection

from core.model.values import Hand


def place(hands: list[Hand], hand: Hand, priority: bool) -> int:
    """Put a newly raised ``hand`` into ``hands`` where it belongs; its 1-based position. Its ``seq``
    is after every hand up now (the clock may stamp two hands alike; the order never does)."""
    hand.seq = max((h.seq for h in hands), default=0) + 1
    if priority and hand.subscriber:
        at = sum(1 for h in hands if h.subscriber)  # behind the subscribers already waiting
        hands.insert(at, hand)
        return at + 1
    hands.append(hand)
    return len(hands)


def reorder(hands: list[Hand], priority: bool, subscribers: Collection[str] = ()) -> list[Hand]:
    """``hands`` in the order the rule asks for.

    Priority on: each hand is marked with whether its account is in ``subscribers`` (read now), then
    subscribers go first, each group keeping its raise order. Priority off: raise order (``seq``)."""
    if priority:
        for h in hands:
            h.subscriber = h.account_id in subscribers
        return [h for h in hands if h.subscriber] + [h for h in hands if not h.subscriber]
    return sorted(hands, key=lambda h: h.seq)
