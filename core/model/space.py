"""The Space aggregate: lifecycle, stage roles, the raise-hand Queue, pins and captions.

Listeners are not held here (a Space may have thousands): presence lives in storage and the
aggregate only answers questions about the stage. Every method checks the caller's role, changes
state or raises a ``DomainError`` having changed nothing, and records the events it caused.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from core import events as ev
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.ids import new_id
from core.model import queue
from core.model.subscription import MAX_EARLY_MINUTES, SubscriberAccess
from core.model.values import (
    MAX_AHEAD,
    MAX_COHOSTS,
    MAX_PIN_TITLE,
    MAX_PINS,
    MAX_SCHEDULED_PER_HOST,
    MAX_SPEAKERS,
    MAX_TITLE,
    MAX_TOPIC_LEN,
    MAX_TOPICS,
    STAGE_ROLES,
    Hand,
    Pin,
    Role,
    SpaceState,
    Ticketing,
    Visibility,
    validate_start,
    validate_title,
    validate_topics,
)

__all__ = ["MAX_AHEAD", "MAX_COHOSTS", "MAX_PINS", "MAX_PIN_TITLE", "MAX_SCHEDULED_PER_HOST", "MAX_SPEAKERS",
           "MAX_TITLE", "MAX_TOPICS", "MAX_TOPIC_LEN", "STAGE_ROLES", "Hand", "Pin", "Role", "Space", "SpaceState",
           "Ticketing", "Visibility", "validate_start", "validate_title", "validate_topics"]


@dataclass
class Space:
    id: str
    host_id: str
    title: str
    state: SpaceState
    created_at: datetime
    community_id: str | None = None
    visibility: Visibility = Visibility.PUBLIC
    topics: list[str] = field(default_factory=list)
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    cohosts: list[str] = field(default_factory=list)
    speakers: list[str] = field(default_factory=list)
    muted: set[str] = field(default_factory=set)
    invited: set[str] = field(default_factory=set)
    hands: list[Hand] = field(default_factory=list)
    pins: list[Pin] = field(default_factory=list)
    captions_enabled: bool = False
    ticketing: Ticketing | None = None
    subscribers: SubscriberAccess | None = None  # Super Follows: who of the host's subscribers may join
    subscriber_priority: bool = False  # Super Follows: the host's subscribers' hands go first in the queue
    version: int = 0
    pending_events: list[ev.Event] = field(default_factory=list, repr=False, compare=False)

    # ---- creation -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        *,
        host_id: str,
        title: str,
        now: datetime,
        start_at: datetime | None = None,
        topics: list[str] | tuple[str, ...] = (),
        visibility: Visibility = Visibility.PUBLIC,
        community_id: str | None = None,
        space_id: str | None = None,
    ) -> Space:
        title = validate_title(title)
        clean_topics = validate_topics(topics)
        if start_at is not None:
            validate_start(start_at, now)
        space = cls(
            id=space_id or new_id(),
            host_id=host_id,
            title=title,
            state=SpaceState.SCHEDULED,
            created_at=now,
            community_id=community_id,
            visibility=visibility,
            topics=clean_topics,
            scheduled_for=start_at,
        )
        space._emit(
            ev.SpaceScheduled(
                space_id=space.id, host_id=host_id, title=title, scheduled_for=start_at,
                community_id=community_id, at=now,
            )
        )
        return space

    # ---- queries --------------------------------------------------------------------------
    @property
    def stage(self) -> list[str]:
        return [self.host_id, *self.cohosts, *self.speakers]

    @property
    def is_open(self) -> bool:
        return self.state in (SpaceState.SCHEDULED, SpaceState.LIVE)

    def role_of(self, account_id: str) -> Role | None:
        """The stage role, or None for anyone else (listener or not present)."""
        if account_id == self.host_id:
            return Role.HOST
        if account_id in self.cohosts:
            return Role.COHOST
        if account_id in self.speakers:
            return Role.SPEAKER
        return None

    def is_moderator(self, account_id: str) -> bool:
        return self.role_of(account_id) in (Role.HOST, Role.COHOST)

    def queue_position(self, account_id: str) -> int | None:
        for i, h in enumerate(self.hands):
            if h.account_id == account_id:
                return i + 1
        return None

    def publishers(self) -> set[str]:
        """Who may be heard right now: the stage minus the muted."""
        return {a for a in self.stage if a not in self.muted} if self.state == SpaceState.LIVE else set()

    # ---- guards ---------------------------------------------------------------------------
    def _emit(self, event: ev.Event) -> None:
        self.pending_events.append(event)

    def _require_open(self) -> None:
        if not self.is_open:
            raise Conflict("space.closed", space_id=self.id, state=self.state.value)

    def _require_live(self) -> None:
        if self.state != SpaceState.LIVE:
            raise Conflict("space.not_live", space_id=self.id, state=self.state.value)

    def _require_moderator(self, by: str, override: bool = False) -> None:
        if not override and not self.is_moderator(by):
            raise Forbidden("role.moderator_required", space_id=self.id, role=self._role_name(by))

    def _require_host(self, by: str, override: bool = False) -> None:
        if not override and by != self.host_id:
            raise Forbidden("role.host_required", space_id=self.id, role=self._role_name(by))

    def _require_stage(self, by: str, override: bool = False) -> None:
        if not override and self.role_of(by) is None:
            raise Forbidden("role.stage_required", space_id=self.id, role=self._role_name(by))

    def _role_name(self, account_id: str) -> str:
        r = self.role_of(account_id)
        return r.value if r else Role.LISTENER.value

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self, by: str, now: datetime, override: bool = False) -> None:
        self._require_host(by, override)
        if self.state != SpaceState.SCHEDULED:
            raise Conflict("space.cannot_start", space_id=self.id, state=self.state.value)
        self.state = SpaceState.LIVE
        self.started_at = now
        self._emit(ev.SpaceStarted(space_id=self.id, host_id=self.host_id, title=self.title,
                                   community_id=self.community_id, at=now))

    def end(self, by: str, now: datetime, override: bool = False, reason: str = "host_ended") -> None:
        self._require_host(by, override)
        self._require_live()
        self._close(SpaceState.ENDED, now)
        self._emit(ev.SpaceEnded(space_id=self.id, reason=reason, at=now))

    def cancel(self, by: str, now: datetime, override: bool = False) -> None:
        self._require_host(by, override)
        if self.state != SpaceState.SCHEDULED:
            raise Conflict("space.cannot_cancel", space_id=self.id, state=self.state.value)
        self._close(SpaceState.CANCELLED, now)
        self._emit(ev.SpaceCancelled(space_id=self.id, by=by, at=now))

    def _close(self, state: SpaceState, now: datetime) -> None:
        self.state = state
        self.ended_at = now
        self.hands.clear()
        self.invited.clear()
        self.muted.clear()

    def reschedule(self, by: str, when: datetime, now: datetime, override: bool = False) -> None:
        self._require_host(by, override)
        if self.state != SpaceState.SCHEDULED:
            raise Conflict("space.cannot_reschedule", space_id=self.id, state=self.state.value)
        validate_start(when, now)
        previous, self.scheduled_for = self.scheduled_for, when
        self._emit(ev.SpaceRescheduled(space_id=self.id, scheduled_for=when, previous=previous, at=now))

    def edit(self, by: str, now: datetime, title: str | None = None, topics: list[str] | None = None,
             override: bool = False) -> None:
        self._require_host(by, override)
        self._require_open()
        new_title = validate_title(title) if title is not None else self.title
        new_topics = validate_topics(topics) if topics is not None else self.topics
        self.title, self.topics = new_title, new_topics
        self._emit(ev.SpaceUpdated(space_id=self.id, title=self.title, topics=tuple(self.topics), at=now))

    # ---- stage ----------------------------------------------------------------------------
    def _set_role(self, account_id: str, role: Role, by: str, now: datetime) -> None:
        previous = self.role_of(account_id) or Role.LISTENER
        if account_id in self.cohosts:
            self.cohosts.remove(account_id)
        if account_id in self.speakers:
            self.speakers.remove(account_id)
        if role == Role.COHOST:
            self.cohosts.append(account_id)
        elif role == Role.SPEAKER:
            self.speakers.append(account_id)
        if role == Role.LISTENER:
            self.muted.discard(account_id)
        self.invited.discard(account_id)
        promoted = role != Role.LISTENER
        self._drop_hand(account_id, "approved" if promoted else "left", by, now, emit=promoted)
        self._emit(ev.RoleChanged(space_id=self.id, account_id=account_id, role=role.value,
                                  previous=previous.value, by=by, at=now))

    def _check_room(self, role: Role, account_id: str) -> None:
        if role == Role.COHOST and account_id not in self.cohosts and len(self.cohosts) >= MAX_COHOSTS:
            raise Conflict("stage.cohosts_full", space_id=self.id, max=MAX_COHOSTS)
        if role == Role.SPEAKER and account_id not in self.speakers and len(self.speakers) >= MAX_SPEAKERS:
            raise Conflict("stage.full", space_id=self.id, max=MAX_SPEAKERS)

    def invite(self, by: str, account_id: str, now: datetime, override: bool = False) -> None:
        """Ask a listener to speak; they join the stage when they accept."""
        self._require_moderator(by, override)
        self._require_live()
        if self.role_of(account_id) is not None:
            raise Conflict("stage.already_on_stage", space_id=self.id, account_id=account_id)
        self._check_room(Role.SPEAKER, account_id)
        self.invited.add(account_id)
        self._emit(ev.SpeakerInvited(space_id=self.id, account_id=account_id, by=by, at=now))

    def accept_invite(self, account_id: str, now: datetime) -> None:
        self._require_live()
        if account_id not in self.invited:
            raise Conflict("stage.not_invited", space_id=self.id, account_id=account_id)
        self._check_room(Role.SPEAKER, account_id)
        self._set_role(account_id, Role.SPEAKER, account_id, now)

    def promote(self, by: str, account_id: str, role: Role, now: datetime, override: bool = False) -> None:
        """Put someone on stage as speaker (moderators) or make a co-host (host only)."""
        self._require_live()
        if role == Role.COHOST:
            self._require_host(by, override)
        elif role == Role.SPEAKER:
            self._require_moderator(by, override)
        else:
            raise Invalid("role.bad_target", role=role.value, allowed=["cohost", "speaker"])
        current = self.role_of(account_id)
        if current == Role.HOST:
            raise Conflict("role.is_host", space_id=self.id, account_id=account_id)
        if current == role:
            raise Conflict("role.unchanged", space_id=self.id, account_id=account_id, role=role.value)
        if current == Role.COHOST and not override and by != self.host_id:
            raise Forbidden("role.host_required", space_id=self.id, role=self._role_name(by))
        self._check_room(role, account_id)
        self._set_role(account_id, role, by, now)

    def demote(self, by: str, account_id: str, now: datetime, override: bool = False) -> None:
        """Back to listener. Co-hosts can demote speakers; only the host demotes co-hosts;
        anyone on stage may step down themselves."""
        self._require_live()
        current = self.role_of(account_id)
        if current is None:
            raise Conflict("stage.not_on_stage", space_id=self.id, account_id=account_id)
        if current == Role.HOST:
            raise Conflict("role.is_host", space_id=self.id, account_id=account_id)
        if by != account_id:
            if current == Role.COHOST:
                self._require_host(by, override)
            else:
                self._require_moderator(by, override)
        self._set_role(account_id, Role.LISTENER, by, now)

    def mute(self, by: str, account_id: str, now: datetime, override: bool = False) -> None:
        self._require_live()
        if self.role_of(account_id) is None:
            raise Conflict("stage.not_on_stage", space_id=self.id, account_id=account_id)
        if by != account_id:
            self._require_moderator(by, override)
            if account_id == self.host_id and not override:
                raise Forbidden("role.cannot_mute_host", space_id=self.id)
        if account_id in self.muted:
            return
        self.muted.add(account_id)
        self._emit(ev.SpeakerMuted(space_id=self.id, account_id=account_id, muted=True, by=by, at=now))

    def unmute(self, by: str, account_id: str, now: datetime, override: bool = False) -> None:
        """Speakers unmute themselves (as on X); a moderator may too, never for someone else's mic
        beyond lifting their own mute."""
        self._require_live()
        if self.role_of(account_id) is None:
            raise Conflict("stage.not_on_stage", space_id=self.id, account_id=account_id)
        if by != account_id:
            self._require_moderator(by, override)
        if account_id not in self.muted:
            return
        self.muted.discard(account_id)
        self._emit(ev.SpeakerMuted(space_id=self.id, account_id=account_id, muted=False, by=by, at=now))

    def mute_all(self, by: str, now: datetime, override: bool = False) -> None:
        self._require_moderator(by, override)
        self._require_live()
        for a in self.stage:
            if a != by and a != self.host_id and a not in self.muted:
                self.muted.add(a)
                self._emit(ev.SpeakerMuted(space_id=self.id, account_id=a, muted=True, by=by, at=now))

    def remove(self, by: str, account_id: str, now: datetime, override: bool = False) -> None:
        """Take someone off the stage and out of the queue; the service drops their presence."""
        self._require_moderator(by, override)
        self._require_open()
        if account_id == self.host_id:
            raise Forbidden("role.cannot_remove_host", space_id=self.id)
        if account_id in self.cohosts and by != self.host_id and not override:
            raise Forbidden("role.host_required", space_id=self.id, role=self._role_name(by))
        if self.role_of(account_id) is not None:
            self._set_role(account_id, Role.LISTENER, by, now)
        self._drop_hand(account_id, "left", by, now)
        self.invited.discard(account_id)

    def holds_seat(self, account_id: str) -> bool:
        """Whether leaving would take something from them (host, stage, a raised hand, an invitation):
        what a dropped connection keeps for a grace period."""
        return (self.role_of(account_id) is not None or self.queue_position(account_id) is not None
                or account_id in self.invited)

    def leave(self, account_id: str, now: datetime, *, reason: str = "host_left",
              prefer: Collection[str] = ()) -> None:
        """Someone leaves. A leaving host hands over to a co-host (the first of ``prefer``, those
        still connected, else the first), or the Space ends with ``reason``."""
        if not self.is_open:
            return
        self._drop_hand(account_id, "left", account_id, now)
        self.invited.discard(account_id)
        if account_id == self.host_id and self.state == SpaceState.LIVE:
            if self.cohosts:
                new_host = next((c for c in self.cohosts if c in prefer), self.cohosts[0])
                self.cohosts.remove(new_host)
                self.host_id = new_host
                self.muted.discard(new_host)
                self._emit(ev.RoleChanged(space_id=self.id, account_id=new_host, role=Role.HOST.value,
                                          previous=Role.COHOST.value, by=account_id, at=now))
                self._emit(ev.RoleChanged(space_id=self.id, account_id=account_id, role=Role.LISTENER.value,
                                          previous=Role.HOST.value, by=account_id, at=now))
            else:
                self._close(SpaceState.ENDED, now)
                self._emit(ev.SpaceEnded(space_id=self.id, reason=reason, at=now))
        elif self.role_of(account_id) in (Role.COHOST, Role.SPEAKER):
            self._set_role(account_id, Role.LISTENER, account_id, now)

    # ---- queue ----------------------------------------------------------------------------
    def raise_hand(self, account_id: str, now: datetime, subscriber: bool = False) -> int:
        """``subscriber``: the caller holds a subscription to the host (the use case reads it); with
        subscriber priority on, the hand goes behind the other subscribers' and ahead of everyone else's."""
        self._require_live()
        if self.role_of(account_id) is not None:
            raise Conflict("hand.on_stage", space_id=self.id)
        if self.queue_position(account_id) is not None:
            raise Conflict("hand.already_raised", space_id=self.id, position=self.queue_position(account_id))
        pos = queue.place(self.hands, Hand(account_id, now, subscriber), self.subscriber_priority)
        self._emit(ev.HandRaised(space_id=self.id, account_id=account_id, position=pos, at=now))
        return pos

    def lower_hand(self, account_id: str, now: datetime) -> None:
        self._require_live()
        if self.queue_position(account_id) is None:
            raise Conflict("hand.not_raised", space_id=self.id)
        self._drop_hand(account_id, "lowered", account_id, now)

    def _drop_hand(self, account_id: str, reason: str, by: str | None, now: datetime, emit: bool = True) -> bool:
        for i, h in enumerate(self.hands):
            if h.account_id == account_id:
                del self.hands[i]
                if emit:
                    self._emit(ev.HandLowered(space_id=self.id, account_id=account_id, reason=reason, by=by, at=now))
                return True
        return False

    def approve(self, by: str, account_id: str, now: datetime, override: bool = False) -> None:
        self._require_moderator(by, override)
        self._require_live()
        if self.queue_position(account_id) is None:
            raise Conflict("hand.not_raised", space_id=self.id, account_id=account_id)
        self._check_room(Role.SPEAKER, account_id)
        self._drop_hand(account_id, "approved", by, now)
        self._set_role(account_id, Role.SPEAKER, by, now)

    def deny(self, by: str, account_id: str, now: datetime, override: bool = False) -> None:
        self._require_moderator(by, override)
        self._require_live()
        if not self._drop_hand(account_id, "denied", by, now):
            raise Conflict("hand.not_raised", space_id=self.id, account_id=account_id)

    def set_subscriber_priority(self, by: str, on: bool, now: datetime, *, has_tiers: bool,
                                subscribers: Collection[str] = (), override: bool = False) -> bool:
        """Put the host's subscribers' hands first (``on``) or back in raise order; whether it changed.
        ``has_tiers``: the host sells (or sold) a tier; ``subscribers``: which raised hands are theirs now."""
        self._require_moderator(by, override)
        self._require_open()
        if on and not has_tiers:
            raise Conflict("queue.no_tiers", space_id=self.id, host_id=self.host_id)
        if on == self.subscriber_priority:
            return False
        self.subscriber_priority = on
        self.hands = queue.reorder(self.hands, on, subscribers)
        self._emit(ev.SubscriberPriorityToggled(space_id=self.id, enabled=on, by=by, at=now))
        return True

    def clear_queue(self, by: str, now: datetime, override: bool = False) -> int:
        self._require_moderator(by, override)
        self._require_live()
        n = len(self.hands)
        for h in list(self.hands):
            self._drop_hand(h.account_id, "cleared", by, now)
        return n

    # ---- pins and captions ----------------------------------------------------------------
    def pin(self, by: str, now: datetime, title: str, url: str | None = None,
            message_ref: str | None = None, override: bool = False) -> Pin:
        self._require_stage(by, override)
        self._require_open()
        title = " ".join(title.split())
        if not 1 <= len(title) <= MAX_PIN_TITLE:
            raise Invalid("pin.title_length", length=len(title), max=MAX_PIN_TITLE)
        if (url is None) == (message_ref is None):
            raise Invalid("pin.target", hint="give exactly one of a URL or a message reference")
        if (url is not None and not (url.startswith("https://") or url.startswith("http://"))) or (
            url is not None and (len(url) > 2048 or any(c.isspace() for c in url))
        ):
            raise Invalid("pin.bad_url", url=url[:100] if url else url)
        if len(self.pins) >= MAX_PINS:
            raise Conflict("pin.full", space_id=self.id, max=MAX_PINS)
        pin = Pin(id=new_id(8), title=title, url=url, message_ref=message_ref, by=by, at=now)
        self.pins.append(pin)
        self._emit(ev.PinAdded(space_id=self.id, pin_id=pin.id, title=title, url=url,
                               message_ref=message_ref, by=by, at=now))
        return pin

    def unpin(self, by: str, pin_id: str, now: datetime, override: bool = False) -> None:
        self._require_stage(by, override)
        self._require_open()
        for i, p in enumerate(self.pins):
            if p.id == pin_id:
                del self.pins[i]
                self._emit(ev.PinRemoved(space_id=self.id, pin_id=pin_id, by=by, at=now))
                return
        raise NotFound("pin.not_found", space_id=self.id, pin_id=pin_id)

    def set_captions(self, by: str, enabled: bool, now: datetime, override: bool = False) -> None:
        self._require_stage(by, override)
        self._require_open()
        if self.captions_enabled == enabled:
            return
        self.captions_enabled = enabled
        self._emit(ev.CaptionsToggled(space_id=self.id, enabled=enabled, by=by, at=now))

    def set_ticketing(self, by: str, ticketing: Ticketing | None, now: datetime, override: bool = False) -> None:
        self._require_host(by, override)
        if self.state != SpaceState.SCHEDULED:
            raise Conflict("ticket.only_before_start", space_id=self.id, state=self.state.value)
        if ticketing is not None:
            if ticketing.price_minor <= 0:
                raise Invalid("ticket.bad_price", price=ticketing.price_minor)
            if ticketing.capacity is not None and ticketing.capacity < 1:
                raise Invalid("ticket.bad_capacity", capacity=ticketing.capacity)
            if len(ticketing.currency) != 3 or not ticketing.currency.isalpha():
                raise Invalid("ticket.bad_currency", currency=ticketing.currency)
            ticketing.currency = ticketing.currency.upper()
        self.ticketing = ticketing

    def set_subscriber_access(self, by: str, access: SubscriberAccess | None, override: bool = False) -> None:
        """Make the Space subscribers-only (or subscribers-first) at or above one of the host's tiers;
        the use case checks the tier is the host's own and on sale."""
        self._require_host(by, override)
        if self.state != SpaceState.SCHEDULED:
            raise Conflict("subscription.only_before_start", space_id=self.id, state=self.state.value)
        if access is not None and not 0 <= access.early_minutes <= MAX_EARLY_MINUTES:
            raise Invalid("subscription.bad_early_minutes", minutes=access.early_minutes, max=MAX_EARLY_MINUTES)
        self.subscribers = access
