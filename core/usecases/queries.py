"""Read models: what every adapter renders (``SpaceView``), lists, and share payloads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.errors import Conflict, Invalid, NotFound
from core.model.accounts import Account
from core.model.space import Space, SpaceState
from core.usecases.context import Context
from core.usecases.engagement import Engagement

CARD_CAPTION_LINES = 3
MAX_SEARCH = 100
ROOM_PRESENT_MAX = 200  # the people a late joiner's snapshot names (listener_count counts them all)


@dataclass(frozen=True)
class SpaceView:
    """What every adapter renders: the Space, how many listen, tallies, recent captions."""

    space: Space
    host_name: str
    listener_count: int
    reactions: dict[str, int]
    names: dict[str, str] = field(default_factory=dict)
    badges: dict[str, str] = field(default_factory=dict)  # source -> text ("recording": "🔴 Recording")
    captions: list[dict[str, Any]] = field(default_factory=list)  # the last few lines while captions are on
    subscribers: list[str] = field(default_factory=list)  # of those named: the host's paying subscribers (a badge)
    tier_names: dict[str, str] = field(default_factory=dict)  # the ticket terms' tiers (free, discount): id -> name

    def as_dict(self) -> dict[str, Any]:
        s = self.space
        return {
            "id": s.id, "title": s.title, "state": s.state.value, "host_id": s.host_id, "host_name": self.host_name,
            "community_id": s.community_id, "visibility": s.visibility.value, "topics": s.topics,
            "scheduled_for": s.scheduled_for.isoformat() if s.scheduled_for else None,
            "started_at": s.started_at.isoformat() if s.started_at else None,
            "ended_at": s.ended_at.isoformat() if s.ended_at else None,
            "cohosts": s.cohosts, "speakers": s.speakers, "muted": sorted(s.muted),
            "queue": [h.account_id for h in s.hands], "invited": sorted(s.invited),
            "pins": [{"id": p.id, "title": p.title, "url": p.url, "message_ref": p.message_ref} for p in s.pins],
            "captions_enabled": s.captions_enabled, "subscriber_priority": s.subscriber_priority,
            "listener_count": self.listener_count,
            "reactions": self.reactions, "names": self.names, "badges": self.badges, "subscribers": self.subscribers,
            "ticketing": None if s.ticketing is None else {
                "price_minor": s.ticketing.price_minor, "currency": s.ticketing.currency,
                "capacity": s.ticketing.capacity},
        }


@dataclass(frozen=True)
class RoomPresence:
    """Who is in a live Space right now, for a client that joins late (it saw none of the events):
    the seats kept for people whose connection dropped (``away``: until when), and, when asked, who
    is present (up to ``ROOM_PRESENT_MAX``) with their names."""

    away: dict[str, datetime]
    present: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    """A person's page: who they are, how many follow them, their public Spaces."""

    account: Account
    followers: int
    live: list[Space]
    upcoming: list[Space]
    past: list[Space]


@dataclass(frozen=True)
class Relation:
    following: bool = False
    reminded: bool = False


@dataclass(frozen=True)
class SharePayload:
    space_id: str
    title: str
    host_name: str
    state: str
    starts_at: datetime | None
    links: dict[str, str]

    def text(self) -> str:
        when = f" starting {self.starts_at:%Y-%m-%d %H:%M} UTC" if self.starts_at and self.state == "scheduled" else ""
        status = "live now" if self.state == "live" else self.state
        lines = [f"🎙 {self.title} — hosted by {self.host_name} ({status}{when})"]
        lines += [f"{p}: {u}" for p, u in sorted(self.links.items())]
        return "\n".join(lines)


class Queries:
    """Queries; no writes."""

    def __init__(self, ctx: Context, engagement: Engagement) -> None:
        self.ctx, self.engagement = ctx, engagement

    async def view(self, space_id: str) -> SpaceView:
        async with self.ctx.uow() as uow:
            space = await uow.spaces.get(space_id)
            ids = list({*space.stage, *(h.account_id for h in space.hands)})
            names: dict[str, str] = {}
            for a in ids:
                try:
                    names[a] = (await uow.accounts.get(a)).display_name
                except NotFound:
                    names[a] = a
            count = await uow.spaces.present_count(space_id)
            captions: list[dict[str, Any]] = []
            if space.captions_enabled and space.state == SpaceState.LIVE:
                rows = await uow.spaces.recent_captions(space_id, CARD_CAPTION_LINES)
                captions = [{"speaker_id": r.speaker_id, "text": r.text} for r in rows]
                for r in rows:
                    if r.speaker_id not in names:
                        try:
                            names[r.speaker_id] = (await uow.accounts.get(r.speaker_id)).display_name
                        except NotFound:
                            names[r.speaker_id] = r.speaker_id
            subscribers = sorted(await self.ctx.paying(uow, space.host_id, [a for a in names if a != space.host_id]))
            tier_names: dict[str, str] = {}
            t = space.ticketing
            for tier_id in ([t.free_tier_id, t.discount_tier_id] if t is not None else []):
                if tier_id and (tier := await uow.subscriptions.tier(tier_id)) is not None:
                    tier_names[tier_id] = tier.name
        badges = await self.engagement.badges(space_id) if space.state == SpaceState.LIVE else {}
        return SpaceView(space=space, host_name=names.get(space.host_id, space.host_id), listener_count=count,
                         reactions=self.ctx.reactions.tallies(space_id, 60), names=names, badges=badges,
                         captions=captions, subscribers=subscribers, tier_names=tier_names)

    async def list_spaces(self, *, states: Sequence[str] = ("live", "scheduled"), host_id: str | None = None,
                          community_id: str | None = None, include_unlisted: bool = True,
                          limit: int = 100, title_contains: str = "", newest_first: bool = False) -> list[Space]:
        """``title_contains`` searches titles (case-insensitive); ``newest_first`` orders by the latest
        of ended/started/created (replays, past Spaces) instead of state and start time."""
        for s in states:
            if s not in {x.value for x in SpaceState}:
                raise Invalid("space.bad_state", given=s, allowed=[x.value for x in SpaceState])
        if len(title_contains) > MAX_SEARCH:
            raise Invalid("space.search_too_long", length=len(title_contains), max=MAX_SEARCH)
        async with self.ctx.uow() as uow:
            return await uow.spaces.find(states=states, host_id=host_id, community_id=community_id,
                                         include_unlisted=include_unlisted, limit=limit,
                                         title_contains=title_contains, newest_first=newest_first)

    async def profile(self, account_id: str, *, limit: int = 20) -> Profile:
        """A person's public page: name, followers, and their public Spaces (live, upcoming, past)."""
        async with self.ctx.uow() as uow:
            account = await uow.accounts.get(account_id)
            followers = await uow.accounts.follower_count(account_id)
            current = await uow.spaces.find(states=("live", "scheduled"), host_id=account_id,
                                            include_unlisted=False, limit=limit)
            past = await uow.spaces.find(states=("ended",), host_id=account_id, include_unlisted=False,
                                         limit=limit, newest_first=True)
        return Profile(account=account, followers=followers,
                       live=[s for s in current if s.state == SpaceState.LIVE],
                       upcoming=[s for s in current if s.state == SpaceState.SCHEDULED], past=past)

    async def relation(self, account_id: str, *, host_id: str | None = None,
                       space_id: str | None = None) -> Relation:
        """What a page's buttons show for this person: following the host, reminder set."""
        async with self.ctx.uow() as uow:
            following = bool(host_id) and await uow.accounts.is_following(account_id, host_id or "")
            reminded = bool(space_id) and await uow.spaces.has_reminder(space_id or "", account_id)
        return Relation(following=following, reminded=reminded)

    async def room_presence(self, space_id: str, *, present: bool = False) -> RoomPresence:
        """Who is away (a kept seat) and, with ``present``, who is here, with names: what a room's
        snapshot adds to ``view`` (which every card and command reads, so it stays without them)."""
        async with self.ctx.uow() as uow:
            away = {a.account_id: a.until for a in await uow.presence.away(space_id)}
            here = await uow.spaces.present_accounts(space_id, ROOM_PRESENT_MAX) if present else []
            names: dict[str, str] = {}
            for a in dict.fromkeys([*here, *away]):
                try:
                    names[a] = (await uow.accounts.get(a)).display_name
                except NotFound:
                    names[a] = a
        return RoomPresence(away=away, present=sorted(here), names=names)

    async def display_names(self, account_ids: Sequence[str]) -> dict[str, str]:
        """Names for ids (an id stands for itself if its account is gone)."""
        names: dict[str, str] = {}
        async with self.ctx.uow() as uow:
            for a in dict.fromkeys(account_ids):
                try:
                    names[a] = (await uow.accounts.get(a)).display_name
                except NotFound:
                    names[a] = a
        return names

    async def share(self, space_id: str, links: dict[str, str]) -> SharePayload:
        view = await self.view(space_id)
        s = view.space
        if s.state in (SpaceState.ENDED, SpaceState.CANCELLED):
            raise Conflict("space.closed", space_id=space_id, state=s.state.value)
        return SharePayload(space_id=s.id, title=s.title, host_name=view.host_name, state=s.state.value,
                            starts_at=s.scheduled_for or s.started_at, links=dict(links))
