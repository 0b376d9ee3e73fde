"""Domain events: plain dataclasses, one per state change, serialisable for the cross-process bus."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, get_type_hints

_REGISTRY: dict[str, type[Event]] = {}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every domain event. ``name`` is the stable wire name (``"space.started"``)."""

    name: ClassVar[str] = "event"
    at: datetime = field(default_factory=_now)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.name}
        for f in dataclasses.fields(self):
            out[f.name] = _encode(getattr(self, f.name))
        return out


def _encode(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, tuple | list):
        return [_encode(x) for x in v]
    if isinstance(v, dict):
        return {k: _encode(x) for k, x in v.items()}
    return v


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event that crossed a process boundary; unknown types raise ``KeyError``."""
    cls = _REGISTRY[data["type"]]
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        v = data[f.name]
        hint = str(hints.get(f.name, ""))
        if v is not None and "datetime" in hint:
            v = datetime.fromisoformat(v)
        elif isinstance(v, list) and "tuple" in hint:
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


@dataclass(frozen=True, kw_only=True)
class SpaceEvent(Event):
    space_id: str


@dataclass(frozen=True, kw_only=True)
class SpaceScheduled(SpaceEvent):
    name: ClassVar[str] = "space.scheduled"
    host_id: str
    title: str
    scheduled_for: datetime | None
    community_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class SpaceRescheduled(SpaceEvent):
    name: ClassVar[str] = "space.rescheduled"
    scheduled_for: datetime
    previous: datetime | None


@dataclass(frozen=True, kw_only=True)
class SpaceStarted(SpaceEvent):
    name: ClassVar[str] = "space.started"
    host_id: str
    title: str
    community_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class SpaceEnded(SpaceEvent):
    name: ClassVar[str] = "space.ended"
    reason: str  # "host_ended" | "host_left" | "host_disconnected" (grace ran out) | "operator"


@dataclass(frozen=True, kw_only=True)
class SpaceCancelled(SpaceEvent):
    name: ClassVar[str] = "space.cancelled"
    by: str


@dataclass(frozen=True, kw_only=True)
class SpaceUpdated(SpaceEvent):
    name: ClassVar[str] = "space.updated"
    title: str
    topics: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ParticipantJoined(SpaceEvent):
    name: ClassVar[str] = "participant.joined"
    account_id: str
    role: str
    listener_count: int


@dataclass(frozen=True, kw_only=True)
class ParticipantLeft(SpaceEvent):
    name: ClassVar[str] = "participant.left"
    account_id: str
    reason: str  # "left" | "removed" | "blocked" | "disconnected" (last connection gone; a seat is kept a while)
    listener_count: int
    by: str | None = None  # who removed them
    why: str = ""


@dataclass(frozen=True, kw_only=True)
class ParticipantAway(SpaceEvent):
    """Someone holding a seat (host, stage, a raised hand) lost their last connection. Nothing ends
    yet: they keep it until ``until`` and come back by reconnecting; then the normal leave applies."""

    name: ClassVar[str] = "participant.away"
    account_id: str
    role: str  # host | cohost | speaker | listener (a listener with a raised hand or an invitation)
    until: datetime


@dataclass(frozen=True, kw_only=True)
class ParticipantBack(SpaceEvent):
    """Someone who was away reconnected within their grace period."""

    name: ClassVar[str] = "participant.back"
    account_id: str
    role: str


@dataclass(frozen=True, kw_only=True)
class RoleChanged(SpaceEvent):
    name: ClassVar[str] = "role.changed"
    account_id: str
    role: str  # new role: host | cohost | speaker | listener
    previous: str
    by: str


@dataclass(frozen=True, kw_only=True)
class SpeakerMuted(SpaceEvent):
    name: ClassVar[str] = "speaker.muted"
    account_id: str
    muted: bool
    by: str


@dataclass(frozen=True, kw_only=True)
class SpeakerInvited(SpaceEvent):
    name: ClassVar[str] = "speaker.invited"
    account_id: str
    by: str


@dataclass(frozen=True, kw_only=True)
class HandRaised(SpaceEvent):
    name: ClassVar[str] = "hand.raised"
    account_id: str
    position: int


@dataclass(frozen=True, kw_only=True)
class HandLowered(SpaceEvent):
    name: ClassVar[str] = "hand.lowered"
    account_id: str
    reason: str  # "lowered" | "approved" | "denied" | "left" | "cleared"
    by: str | None = None


@dataclass(frozen=True, kw_only=True)
class SubscriberPriorityToggled(SpaceEvent):
    """The host's subscribers' hands go first in the queue (``enabled``) or back in raise order: every
    position may have moved, so surfaces read the queue again."""

    name: ClassVar[str] = "queue.subscriber_priority"
    enabled: bool
    by: str


@dataclass(frozen=True, kw_only=True)
class AccountBlocked(SpaceEvent):
    name: ClassVar[str] = "account.blocked"
    host_id: str
    account_id: str
    by: str
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class ReactionSent(SpaceEvent):
    name: ClassVar[str] = "reaction.sent"
    account_id: str
    emoji: str


@dataclass(frozen=True, kw_only=True)
class PinAdded(SpaceEvent):
    name: ClassVar[str] = "pin.added"
    pin_id: str
    title: str
    url: str | None
    message_ref: str | None
    by: str


@dataclass(frozen=True, kw_only=True)
class PinRemoved(SpaceEvent):
    name: ClassVar[str] = "pin.removed"
    pin_id: str
    by: str


@dataclass(frozen=True, kw_only=True)
class CaptionsToggled(SpaceEvent):
    name: ClassVar[str] = "captions.toggled"
    enabled: bool
    by: str


@dataclass(frozen=True, kw_only=True)
class CaptionLine(SpaceEvent):
    name: ClassVar[str] = "caption.line"
    speaker_id: str
    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True, kw_only=True)
class CommentPosted(SpaceEvent):
    """A line of text chat from someone in the web room."""

    name: ClassVar[str] = "comment.posted"
    account_id: str
    text: str
    display_name: str = ""


@dataclass(frozen=True, kw_only=True)
class SpaceNotice(SpaceEvent):
    """Something everyone in the Space (or one person in it) should be told, e.g. "recording started"."""

    name: ClassVar[str] = "space.notice"
    source: str  # the plugin (or "core") that speaks
    text: str
    account_id: str | None = None  # only this person, where the platform can single them out
    kind: str = "info"  # info | recording | moderation: lets clients show a matching control


@dataclass(frozen=True, kw_only=True)
class SpaceBadge(SpaceEvent):
    """A status shown with the Space on every platform (e.g. "Recording"), set by a plugin."""

    name: ClassVar[str] = "space.badge"
    source: str
    text: str | None  # None: badge removed


@dataclass(frozen=True, kw_only=True)
class ReminderSet(SpaceEvent):
    name: ClassVar[str] = "reminder.set"
    account_id: str
    on: bool


@dataclass(frozen=True, kw_only=True)
class TicketChanged(SpaceEvent):
    name: ClassVar[str] = "ticket.changed"
    ticket_id: str
    account_id: str
    status: str
    provider: str


@dataclass(frozen=True, kw_only=True)
class SubscriptionChanged(SpaceEvent):
    """A listener's subscription to the host (Super Follows) stopped opening a tier while they were
    in this subscribers' Space: each surface checks their access again and lets them go if it ended."""

    name: ClassVar[str] = "subscription.changed"
    account_id: str
    subscription_id: str
    status: str


@dataclass(frozen=True, kw_only=True)
class SubscriberChanged(SpaceEvent):
    """Someone on stage or in the queue of the host's live Space started or stopped paying the host:
    the Space's subscriber badges (``SpaceView.subscribers``) changed, so pages and cards redraw."""

    name: ClassVar[str] = "subscriber.changed"
    account_id: str
    subscriber: bool  # do they pay the host now (the badge beside their name)
    subscribers: tuple[str, ...] = ()  # the Space's badge list now, as ``space.subscribers`` in a ``space`` frame


@dataclass(frozen=True, kw_only=True)
class SubscriptionUpdated(Event):
    """A subscription's state changed (any provider's event applied): surfaces that give something
    for it outside a Space (Discord's tier roles) bring it in line with what it opens now."""

    name: ClassVar[str] = "subscription.updated"
    account_id: str
    creator_id: str
    subscription_id: str
    status: str


@dataclass(frozen=True, kw_only=True)
class Followed(Event):
    name: ClassVar[str] = "account.followed"
    follower_id: str
    host_id: str
    following: bool
    followers: int


@dataclass(frozen=True, kw_only=True)
class IdentityLinked(Event):
    name: ClassVar[str] = "identity.linked"
    account_id: str
    platform: str
    external_id: str
