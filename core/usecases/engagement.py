"""Engagement: reactions (in memory), pins, captions, comments, and the badges and notices plugins set."""

from __future__ import annotations

import time
from typing import Any

from core import events as ev
from core.errors import Conflict, Invalid
from core.model.accounts import Actor
from core.model.space import Space, SpaceState
from core.ports import UnitOfWork
from core.reactions import validate_emoji
from core.usecases.context import Context

MAX_COMMENT = 300


class Engagement:
    """Use cases for what the audience and plugins add to a live Space."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def react(self, actor: Actor, space_id: str, emoji: str) -> dict[str, int]:
        """Validate, rate-limit, tally and broadcast; no database write per reaction."""
        emoji = validate_emoji(emoji)
        await self.ctx.guard(actor, space_id, "react")
        now = time.monotonic()
        if not self.ctx.access.allowed(space_id, actor.account_id, now):
            async with self.ctx.uow() as uow:
                await self.ctx.check_access(uow, await uow.spaces.get(space_id), actor.account_id)
            self.ctx.access.grant(space_id, actor.account_id, now)
        self.ctx.reactions.record(space_id, actor.account_id, emoji, now)
        await self.ctx.bus.publish([ev.ReactionSent(space_id=space_id, account_id=actor.account_id, emoji=emoji,
                                                at=self.ctx.now())])
        return self.ctx.reactions.tallies(space_id, 60, now)

    async def pin(self, actor: Actor, space_id: str, title: str, url: str | None = None,
                  message_ref: str | None = None) -> Space:
        title = await self.ctx.filter_text("pin", space_id, title)
        return await self.ctx.mutate(space_id, lambda s: s.pin(actor.account_id, self.ctx.now(), title, url,
                                                               message_ref, override=actor.is_operator))

    async def unpin(self, actor: Actor, space_id: str, pin_id: str) -> Space:
        return await self.ctx.mutate(space_id, lambda s: s.unpin(actor.account_id, pin_id, self.ctx.now(),
                                                              override=actor.is_operator))

    async def set_captions(self, actor: Actor, space_id: str, enabled: bool) -> Space:
        return await self.ctx.mutate(space_id, lambda s: s.set_captions(actor.account_id, enabled, self.ctx.now(),
                                                                     override=actor.is_operator))

    async def add_caption(self, space_id: str, speaker_id: str, text: str, start_s: float, end_s: float) -> bool:
        """From the captions plugin: kept for late joiners and broadcast; dropped if captions are off."""
        text = await self.ctx.filter_text("caption", space_id, " ".join(text.split())[:1000])
        if not text:
            return False

        async def op(uow: UnitOfWork) -> bool:
            space = await uow.spaces.get(space_id)
            if space.state != SpaceState.LIVE or not space.captions_enabled:
                return False
            await uow.spaces.add_caption(space_id, speaker_id, text, start_s, end_s, self.ctx.now())
            uow.emit(ev.CaptionLine(space_id=space_id, speaker_id=speaker_id, text=text, start_s=start_s,
                                    end_s=end_s, at=self.ctx.now()))
            return True

        return await self.ctx.run(op)

    async def comment(self, actor: Actor, space_id: str, text: str) -> dict[str, Any]:
        """Anyone in a live Space may write; guards (spam limits) and text filters apply first."""
        text = " ".join(str(text).split())
        if not 1 <= len(text) <= MAX_COMMENT:
            raise Invalid("comment.length", length=len(text), max=MAX_COMMENT)
        async with self.ctx.uow() as uow:
            space = await uow.spaces.get(space_id)
            if space.state != SpaceState.LIVE:
                raise Conflict("space.not_live", space_id=space_id, state=space.state.value)
            await self.ctx.check_access(uow, space, actor.account_id)
            who = (await uow.accounts.get(actor.account_id)).display_name
        await self.ctx.guard(actor, space_id, "comment")
        text = await self.ctx.filter_text("comment", space_id, text)
        now = self.ctx.now()
        line = {"account_id": actor.account_id, "display_name": who, "text": text, "at": now.isoformat()}
        await self.ctx.kv.put(f"comment:{space_id}:{int(now.timestamp() * 1_000_000):017d}:"
                                    f"{actor.account_id}", line)
        await self.ctx.bus.publish([ev.CommentPosted(space_id=space_id, account_id=actor.account_id, text=text,
                                                 display_name=who, at=now)])
        return line

    async def recent_comments(self, space_id: str, limit: int = 30) -> list[dict[str, Any]]:
        """The last comments, oldest first, for people who join late."""
        rows = await self.ctx.kv.scan(f"comment:{space_id}:", limit=limit, newest_first=True)
        return [e.value for e in reversed(rows)]

    async def recent_captions(self, space_id: str, limit: int = 20) -> list[dict[str, Any]]:
        async with self.ctx.uow() as uow:
            rows = await uow.spaces.recent_captions(space_id, limit)
            return [{"speaker_id": r.speaker_id, "text": r.text, "start_s": r.start_s, "end_s": r.end_s,
                     "at": r.at.isoformat()} for r in rows]

    async def set_badge(self, space_id: str, source: str, text: str | None) -> None:
        """Show (or with None, remove) a status next to the Space everywhere, late joiners included."""
        key = f"badge:{space_id}:{source}"
        if text is None:
            await self.ctx.kv.delete(key)
        else:
            await self.ctx.kv.put(key, {"text": text[:64]})
        await self.ctx.bus.publish([ev.SpaceBadge(space_id=space_id, source=source, text=text, at=self.ctx.now())])

    async def badges(self, space_id: str) -> dict[str, str]:
        prefix = f"badge:{space_id}:"
        return {e.key[len(prefix):]: str(e.value.get("text", "")) for e in await self.ctx.kv.scan(prefix)}

    async def notice(self, space_id: str, source: str, text: str, *, account_id: str | None = None,
                     kind: str = "info") -> None:
        text = await self.ctx.filter_text("notice", space_id, " ".join(text.split())[:500])
        await self.ctx.bus.publish([ev.SpaceNotice(space_id=space_id, source=source, text=text, account_id=account_id,
                                               kind=kind, at=self.ctx.now())])
