"""Moderation: an audit log of every stage and moderator action, a word filter (comments, captions,
pins, notices), spam limits (reactions, hands, comments), and remove-and-block with a reason. Mute-all
is the command table's ``mute_all`` (``muteall`` is its alias there), audited like every mute.

The audit log is written from domain events (so actions taken on any platform, the CLI included,
are recorded the same way) plus the plugin's own decisions (filtered text, refused spam). Entries
live in the plugin's store under ``audit:SPACE:MICROSECONDS:N`` so key order is time order.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import regex
from pydantic import BaseModel, ConfigDict, Field

from core import events as ev
from core.errors import Invalid, RateLimited
from core.kv import KeyValueStore
from core.model.accounts import Actor
from plugins.api import Invocation, Option, PluginContext, Reply, Report

AUDIT_PLUGIN = "moderation"
MAX_WORDS = 500


class ModerationConfig(BaseModel):
    """``[plugins.moderation]`` in the config file."""

    model_config = ConfigDict(extra="forbid")
    words: list[str] = Field(default_factory=list)  # filtered everywhere, on top of each Community's own
    reactions_per_min: int = Field(60, ge=1, le=10_000)
    hands_per_min: int = Field(6, ge=1, le=1_000)  # raising a hand, counted per person per Space
    comments_per_min: int = Field(20, ge=1, le=10_000)
    mask: str = Field("*", min_length=1, max_length=1)


@dataclass
class _Bucket:
    tokens: float
    at: float
    warned: bool = False


def _words_pattern(words: list[str]) -> regex.Pattern[str] | None:
    clean = sorted({w.strip().lower() for w in words if w.strip()}, key=len, reverse=True)
    if not clean:
        return None
    return regex.compile(r"(?<!\w)(?:" + "|".join(regex.escape(w) for w in clean) + r")(?!\w)",
                         regex.IGNORECASE | regex.V1)


async def read_audit(store: KeyValueStore, space_id: str, *, limit: int = 50,
                     actor: str | None = None) -> list[dict[str, Any]]:
    """Newest first; ``actor`` keeps only what that account did."""
    entries = await store.scan(f"audit:{space_id}:", limit=10_000 if actor else limit, newest_first=True)
    rows = [e.value for e in entries if actor is None or e.value.get("who") == actor]
    return rows[:limit]


class ModerationPlugin:
    name = AUDIT_PLUGIN
    version = "1.0.0"
    reports: ClassVar[dict[str, Report]] = {"audit": read_audit}  # spacebridge audit SPACE

    def __init__(self) -> None:
        self.ctx: PluginContext | None = None
        self.config = ModerationConfig()
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}
        self._seq = itertools.count()
        self._patterns: dict[str, tuple[float, regex.Pattern[str] | None]] = {}

    async def setup(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.config = ModerationConfig.model_validate(ctx.config)
        ctx.subscribe(self.on_event, "role.changed", "speaker.muted", "speaker.invited", "hand.lowered",
                      "participant.left", "account.blocked", "pin.added", "pin.removed", "captions.toggled",
                      "queue.subscriber_priority", "space.ended", "space.updated",
                      local_only=True)  # each entry once, by the process that acted
        ctx.guard(self.limit)
        ctx.text_filter(self.filter)
        ctx.command("audit", "Recent moderation actions in this Space (host, co-hosts)", self.cmd_audit,
                    options=[Option("count", "How many entries (default 10)", "number"),
                             Option("who", "Only this person's actions", "member")], min_role="moderator")
        ctx.command("block", "Remove someone and keep them out of the host's Spaces, with a reason",
                    self.cmd_block, options=[Option("member", "Who", "member", required=True),
                                             Option("reason", "Why (kept in the audit log)", "text", required=True)],
                    min_role="moderator")
        ctx.command("filter", "Words kept out of comments, captions and pins here (host, co-hosts)", self.cmd_filter,
                    options=[Option("action", "add, remove or list", "text", required=True,
                                    choices=("add", "remove", "list")),
                             Option("words", "Words, separated by spaces", "text")], min_role="moderator")

    async def teardown(self) -> None:
        self._buckets.clear()

    # ---- the audit log -----------------------------------------------------------------------------
    async def record(self, space_id: str, who: str | None, what: str, whom: str | None = None,
                     why: str = "", at: datetime | None = None) -> None:
        """``at``: when it happened (an event's own time; entries from events arrive a little later)."""
        assert self.ctx is not None
        q = self.ctx.queries
        now = at or q.now()
        entry = {"space_id": space_id, "at": now.isoformat(), "who": who,
                 "who_name": await q.display_name(who) if who else "Spacebridge", "what": what, "whom": whom,
                 "whom_name": await q.display_name(whom) if whom else None, "why": why}
        stamp = int(now.timestamp() * 1_000_000)
        await self.ctx.store.put(f"audit:{space_id}:{stamp:017d}:{next(self._seq) % 1_000_000:06d}", entry)

    async def on_event(self, e: ev.Event) -> None:
        entry = self._describe(e)
        if entry is not None:
            who, what, whom, why = entry
            await self.record(getattr(e, "space_id", ""), who, what, whom, why, at=e.at)

    @staticmethod
    def _describe(e: ev.Event) -> tuple[str | None, str, str | None, str] | None:
        """(who, what, whom, why) for the events that are stage or moderator actions."""
        if isinstance(e, ev.RoleChanged):
            if e.by == e.account_id:
                return e.by, "left the stage" if e.role == "listener" else f"joined the stage as {e.role}", None, ""
            return e.by, "moved to listeners" if e.role == "listener" else f"made {e.role}", e.account_id, ""
        if isinstance(e, ev.SpeakerMuted):
            if e.by == e.account_id:
                return None
            return e.by, "muted" if e.muted else "unmuted", e.account_id, ""
        if isinstance(e, ev.SpeakerInvited):
            return e.by, "invited to speak", e.account_id, ""
        if isinstance(e, ev.HandLowered):
            if e.reason in ("approved", "denied", "cleared") and e.by and e.by != e.account_id:
                return e.by, f"{e.reason} raised hand", e.account_id, ""
            return None
        if isinstance(e, ev.ParticipantLeft):
            return (e.by, "removed", e.account_id, e.why) if e.reason == "removed" else None
        if isinstance(e, ev.AccountBlocked):
            return e.by, "removed and blocked", e.account_id, e.reason
        if isinstance(e, ev.PinAdded):
            return e.by, f"pinned {e.title!r}", None, ""
        if isinstance(e, ev.PinRemoved):
            return e.by, "unpinned an item", None, ""
        if isinstance(e, ev.CaptionsToggled):
            return e.by, "turned captions " + ("on" if e.enabled else "off"), None, ""
        if isinstance(e, ev.SubscriberPriorityToggled):
            return e.by, "turned subscribers first in the queue " + ("on" if e.enabled else "off"), None, ""
        if isinstance(e, ev.SpaceEnded):
            return None, f"Space ended ({e.reason.replace('_', ' ')})", None, ""
        return None

    # ---- spam limits and the word filter --------------------------------------------------------------
    async def limit(self, actor: Actor, space_id: str, action: str) -> None:
        per_min = {"react": self.config.reactions_per_min, "hand": self.config.hands_per_min,
                   "comment": self.config.comments_per_min}.get(action)
        if per_min is None or actor.is_operator:
            return
        now = time.monotonic()
        key = (space_id, actor.account_id, action)
        if len(self._buckets) > 100_000:  # forget people idle for two minutes: their buckets are full again
            self._buckets = {k: v for k, v in self._buckets.items() if now - v.at < 120}
        b = self._buckets.get(key)
        burst = max(3.0, per_min / 6)
        if b is None:
            b = self._buckets[key] = _Bucket(burst, now)
        b.tokens = min(burst, b.tokens + (now - b.at) * per_min / 60)
        b.at = now
        if b.tokens >= 1:
            b.tokens -= 1
            b.warned = False
            return
        retry = round((1 - b.tokens) * 60 / per_min, 1)
        if not b.warned:  # one audit entry per burst of spam, not one per refused click
            b.warned = True
            await self.record(space_id, None, f"slowed down ({action} spam)", actor.account_id)
        raise RateLimited("moderation.rate_limited", retry_after_s=retry,
                          action={"react": "react", "hand": "raise your hand", "comment": "comment"}[action])

    async def _pattern(self, space_id: str) -> regex.Pattern[str] | None:
        assert self.ctx is not None
        cached = self._patterns.get(space_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < 5.0:
            return cached[1]
        view = await self.ctx.queries.space(space_id)
        words = list(self.config.words)
        if view.space.community_id:
            own = await self.ctx.store.get(f"words:{view.space.community_id}")
            words += list((own or {}).get("words", []))
        pattern = _words_pattern(words)
        self._patterns[space_id] = (now, pattern)
        return pattern

    async def filter(self, kind: str, space_id: str, text: str) -> str:
        pattern = await self._pattern(space_id)
        if pattern is None:
            return text
        masked, hits = pattern.subn(lambda m: m.group(0)[0] + self.config.mask * (len(m.group(0)) - 1), text)
        if hits:
            await self.record(space_id, None, f"filtered {hits} word{'s' if hits > 1 else ''} in a {kind}")
        return str(masked)

    # ---- commands -----------------------------------------------------------------------------------
    async def cmd_audit(self, inv: Invocation) -> Reply:
        assert self.ctx is not None
        count = max(1, min(int(inv.args.get("count", 10)), 50))
        rows = await read_audit(self.ctx.store, inv.space.id, limit=count, actor=inv.args.get("who"))
        if not rows:
            return Reply("No moderation actions recorded for this Space yet.")
        lines = []
        for r in rows:
            whom = f" → {r['whom_name']}" if r.get("whom") else ""
            why = f" ({r['why']})" if r.get("why") else ""
            lines.append(f"{r['at'][11:19]} {r['who_name']}: {r['what']}{whom}{why}")
        return Reply("Audit log, newest first:\n" + "\n".join(lines))

    async def cmd_block(self, inv: Invocation) -> Reply:
        assert self.ctx is not None
        who, reason = inv.args["member"], inv.args["reason"]
        await self.ctx.actions.remove(inv.actor, inv.space.id, who, block=True, reason=reason)
        return Reply(f"{await self.ctx.queries.display_name(who)} is removed and blocked from this host's Spaces.")

    async def cmd_filter(self, inv: Invocation) -> Reply:
        assert self.ctx is not None
        community = inv.space.community_id
        if community is None:
            raise Invalid("plugin.bad_option", option="space", problem="this Space belongs to no community")
        key = f"words:{community}"
        words: list[str] = list(((await self.ctx.store.get(key)) or {}).get("words", []))
        action = inv.args["action"]
        given = [w.lower() for w in str(inv.args.get("words", "")).split() if w.strip()]
        if action != "list" and not given:
            raise Invalid("plugin.missing_option", option="words", command="filter")
        if action == "add":
            words = sorted({*words, *given})
            if len(words) > MAX_WORDS:
                raise Invalid("plugin.bad_option", option="words", problem=f"at most {MAX_WORDS} words")
        elif action == "remove":
            words = [w for w in words if w not in given]
        if action != "list":
            await self.ctx.store.put(key, {"words": words})
            self._patterns.clear()
            what = ("added" if action == "add" else "removed") + " filtered words"
            await self.record(inv.space.id, inv.actor.account_id, what, why=" ".join(given))
        return Reply(f"Filtered here: {', '.join(words)}" if words else "No words are filtered here.")
