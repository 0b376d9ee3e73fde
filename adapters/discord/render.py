"""What Spaces look like on Discord: the card (an embed with buttons), DMs, scheduled-event text.

Pure functions from a ``SpaceView`` to plain Discord payload pieces, so a card can be hashed to
decide whether an edit is needed, and reads the same in a test as in a server. Buttons carry
``sb:<kind>:<space id>[:<arg>]`` custom ids that the bot routes back to core commands.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import discord

from adapters.chat import cards as people
from adapters.chat.buttons import JOIN, card_buttons
from adapters.chat.wording import markdown
from adapters.chat.wording import notice as chat_notice
from core.commands import REACTIONS
from core.model.space import SpaceState
from core.services import SpaceView

CARD_REACTIONS = REACTIONS  # the one reaction set (core.commands)
LIVE_COLOUR = 0xE0245E
SCHEDULED_COLOUR = 0x1D9BF0
CLOSED_COLOUR = 0x71767B


def when(dt: datetime | None) -> str:
    """Discord renders ``<t:…:F>`` in each reader's own time zone."""
    return f"<t:{int(dt.timestamp())}:F> (<t:{int(dt.timestamp())}:R>)" if dt else "soon"


def price(view: SpaceView) -> str | None:
    return people.ticket_price(view)


@dataclass(frozen=True)
class CardContent:
    embed: discord.Embed
    view: discord.ui.View | None

    def fingerprint(self) -> str:
        rows = [[(getattr(c, "custom_id", None), getattr(c, "url", None), getattr(c, "label", None),
                  str(getattr(c, "emoji", None) or ""), getattr(c, "disabled", False))
                 for c in self.view.children]] if self.view else []
        body = json.dumps([self.embed.to_dict(), rows], sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:32]


def card(view: SpaceView, web_url: str) -> CardContent:
    s = view.space
    n = view.names
    if s.state == SpaceState.LIVE:
        colour, head = LIVE_COLOUR, "🔴 LIVE"
    elif s.state == SpaceState.SCHEDULED:
        colour, head = SCHEDULED_COLOUR, f"🗓 Starts {when(s.scheduled_for)}"
    else:
        colour, head = CLOSED_COLOUR, f"⏹ {s.state.value.capitalize()}"
    lines = [head, f"Host: **{discord.utils.escape_markdown(view.host_name)}**"]
    if s.topics:
        lines.append("Topics: " + ", ".join(s.topics))
    p = price(view)
    if p:
        lines.append(f"🎟 Ticketed: {p}")
        lines += [terms.text(discord.utils.escape_markdown) for terms in people.subscriber_terms(view)]
    embed = discord.Embed(title=s.title[:256], description="\n".join(lines), colour=colour, url=web_url)
    if s.state == SpaceState.LIVE:
        stage = [discord.utils.escape_markdown(p.name) + p.marks() for p in people.stage(view)]
        if stage:
            embed.add_field(name="On stage", value=", ".join(stage)[:1024], inline=False)
        embed.add_field(name="Listening", value=str(view.listener_count))
        embed.add_field(name="Hands up", value=str(len(s.hands)))
        hands = [f"{i}. {discord.utils.escape_markdown(p.name)}{p.marks()}"
                 for i, p in enumerate(people.queue(view), 1)]
        if hands:
            embed.add_field(name="Queue", value="\n".join(hands)[:1024], inline=False)
        tallies = sorted(view.reactions.items(), key=lambda kv: (-kv[1], kv[0]))[:6]
        if tallies:
            embed.add_field(name="Reactions", value=" · ".join(f"{e} {c}" for e, c in tallies), inline=False)
        for badge in view.badges.values():
            embed.add_field(name="Status", value=badge[:1024])
        if s.captions_enabled:
            said = "\n".join(f"**{discord.utils.escape_markdown(n.get(c['speaker_id'], c['speaker_id']))}:** "
                             f"{discord.utils.escape_markdown(c['text'][-300:])}" for c in view.captions)
            embed.add_field(name="Captions", value=(said or "💬 on")[-1024:], inline=False)
    if s.pins:
        embed.add_field(name="Pinned", value="\n".join(
            f"📌 [{p.title}]({p.url})" if p.url else f"📌 {p.title}" for p in s.pins)[:1024], inline=False)
    embed.set_footer(text=f"Space {s.id}")
    rows = card_buttons(s)
    if not rows:
        return CardContent(embed, None)
    view_ = discord.ui.View(timeout=None)
    for n_row, row in enumerate(rows):
        for b in row:
            style = discord.ButtonStyle.primary if b.primary and not (b.link and b.kind != JOIN) \
                else discord.ButtonStyle.secondary
            if b.link and b.kind != JOIN:  # a URL button: the web page of the Space
                view_.add_item(discord.ui.Button(label=b.label, emoji=b.emoji, url=web_url, row=n_row))
            else:
                custom_id = f"sb:{b.kind}:{s.id}" + (f":{b.arg}" if b.arg else "")
                view_.add_item(discord.ui.Button(label=b.label or None, emoji=b.emoji, custom_id=custom_id,
                                                 style=style, row=n_row))
    return CardContent(embed, view_)


def event_description(view: SpaceView, web_url: str) -> str:
    s = view.space
    parts = [f"A live audio Space hosted by {view.host_name}."]
    if s.topics:
        parts.append("Topics: " + ", ".join(s.topics) + ".")
    p = price(view)
    if p:
        parts.append(f"Ticketed: {p} (buy with /space ticket).")
    parts.append(f"Listen here on the Stage or in the browser: {web_url}")
    return " ".join(parts)[:1000]


def notice(template: str, data: dict[str, Any]) -> str:
    """The DM for a durable delivery, in the shared words (Markdown)."""
    return chat_notice(template, data, markdown(discord.utils.escape_markdown), when=when,
                       start=f"`/space start space:{data.get('space_id')}`", refund="`/space refund`")
