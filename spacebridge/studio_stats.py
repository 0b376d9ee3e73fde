"""Per-Space analytics for the host's console: recorded from the core's events, read back as figures.

``ActivityRecorder`` subscribes to the bus with ``local_only``: each event is recorded once, by the
process whose command committed it, however many processes share the bus. It keeps stretches of
listening (joined → left, away or the end) and counts reactions, raised hands and comments
(``core/storage/analytics.py``). ``space_stats`` turns those into the console's figures: peak and
total listeners (the host not counted), listening minutes, the tallies, ticket revenue, and a
listeners-over-time series for the chart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from billing.ledger import Ledger
from core import events as ev
from core.bus import EventBus, Subscription
from core.errors import DomainError
from core.model.analytics import Span
from core.model.space import Space
from core.services import Core

__all__ = ["RECORDED", "ActivityRecorder", "Bar", "Stats", "space_stats"]

log = logging.getLogger(__name__)

RECORDED = ("participant.joined", "participant.left", "participant.away", "participant.back", "space.ended",
            "reaction.sent", "hand.raised", "comment.posted")
TALLY_OF = {"reaction.sent": "reactions", "hand.raised": "hands", "comment.posted": "comments"}
CHART_BARS = 24


class ActivityRecorder:
    """Writes what the analytics need, one short transaction per event."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.subscription: Subscription | None = None

    def attach(self, bus: EventBus) -> Subscription:
        self.subscription = bus.subscribe(self.record, RECORDED, local_only=True)
        return self.subscription

    async def record(self, event: ev.Event) -> None:
        if not isinstance(event, ev.SpaceEvent):
            return
        async with self.core.uow() as uow:
            a = uow.analytics
            if isinstance(event, ev.ParticipantJoined | ev.ParticipantBack):
                await a.open_span(event.space_id, event.account_id, event.at)
            elif isinstance(event, ev.ParticipantLeft | ev.ParticipantAway):
                await a.close_spans(event.space_id, event.at, event.account_id)
            elif isinstance(event, ev.SpaceEnded):
                await a.close_spans(event.space_id, event.at)
            elif event.name in TALLY_OF:
                await a.bump(event.space_id, TALLY_OF[event.name])
            await uow.commit()


@dataclass(frozen=True)
class Bar:
    """One bar of the listeners chart: a stretch of the Space and how many listened in it."""

    start: datetime
    end: datetime
    listeners: int


@dataclass(frozen=True)
class Stats:
    peak_listeners: int
    total_listeners: int
    listening_minutes: float
    reactions: int
    hands: int
    comments: int
    currency: str
    gross_minor: int
    refunded_minor: int
    net_minor: int
    sold: int
    bars: list[Bar] = field(default_factory=list)

    @property
    def max_bar(self) -> int:
        return max((b.listeners for b in self.bars), default=0)


def _peak(spans: list[tuple[datetime, datetime]]) -> int:
    """Most stretches open at once (an end at the same instant as a start is counted first)."""
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda p: (p[0], p[1]))
    now = best = 0
    for _, step in points:
        now += step
        best = max(best, now)
    return best


def _bars(spans: list[tuple[str, datetime, datetime]], start: datetime, end: datetime) -> list[Bar]:
    if end <= start:
        return []
    n = CHART_BARS
    width = (end - start) / n
    out = []
    for i in range(n):
        b0, b1 = start + width * i, start + width * (i + 1)
        out.append(Bar(b0, b1, len({who for who, s, e in spans if s < b1 and e > b0})))
    return out


async def space_stats(core: Core, ledger: Ledger, space: Space) -> Stats:
    """The figures for ``space`` now (an open stretch counts up to now, or to the Space's end)."""
    async with core.uow() as uow:
        raw: list[Span] = await uow.analytics.spans(space.id)
        tallies = await uow.analytics.tallies(space.id)
    until = space.ended_at or core.now()
    spans = [(s.account_id, s.started_at, min(s.ended_at or until, until)) for s in raw
             if s.account_id != space.host_id]
    spans = [(a, s, max(s, e)) for a, s, e in spans]
    gross = refunded = net = sold = 0
    currency = space.ticketing.currency if space.ticketing else ""
    if space.ticketing is not None or currency:
        try:
            r = await ledger.report(space.id)
            gross, refunded, net, sold, currency = r.gross_minor, r.refunded_minor, r.net_minor, r.sold, r.currency
        except DomainError:
            log.warning("no ticket report for %s", space.id)
    start = space.started_at or (min((s for _, s, _ in spans), default=until))
    return Stats(peak_listeners=_peak([(s, e) for _, s, e in spans]),
                 total_listeners=len({a for a, _, _ in spans}),
                 listening_minutes=round(sum(((e - s) for _, s, e in spans), timedelta()).total_seconds() / 60, 1),
                 reactions=tallies.get("reactions", 0), hands=tallies.get("hands", 0),
                 comments=tallies.get("comments", 0), currency=currency, gross_minor=gross,
                 refunded_minor=refunded, net_minor=net, sold=sold,
                 bars=_bars(spans, start, until) if space.started_at else [])
