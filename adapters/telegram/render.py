"""What Spaces look like in Telegram: the live card, notices sent by DM, and the buttons under them.

Everything here is pure (a view in, text and markup out), so the card's content can be hashed to
decide whether an edit is needed at all, and so it reads the same in a test as in a chat.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from html import escape
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from adapters.chat import cards as people
from adapters.chat.buttons import card_buttons
from adapters.chat.wording import HTML
from adapters.chat.wording import notice as chat_notice
from core.commands import REACTIONS
from core.model.space import SpaceState
from core.services import SpaceView

CARD_REACTIONS = REACTIONS  # the one reaction set (core.commands)


def when(dt: datetime | None) -> str:
    return f"{dt:%a %d %b %H:%M} UTC" if dt else "soon"


def join_link(bot_username: str, space_id: str) -> str:
    """A deep link that opens a private chat with the bot, which answers with the Mini App button."""
    return f"https://t.me/{bot_username}?start=join_{space_id}"


def card(view: SpaceView, bot_username: str) -> tuple[str, InlineKeyboardMarkup | None]:
    s = view.space
    n = view.names
    lines: list[str] = []
    if s.state == SpaceState.LIVE:
        lines.append(f"🔴 <b>LIVE</b> · <b>{escape(s.title)}</b>")
    elif s.state == SpaceState.SCHEDULED:
        lines.append(f"🗓 <b>{escape(s.title)}</b>\nStarts {when(s.scheduled_for)}")
    else:
        lines.append(f"⏹ <b>{escape(s.title)}</b> — {s.state.value}")
    lines.append(f"Host: {escape(view.host_name)}")
    if s.topics:
        lines.append("Topics: " + ", ".join(escape(t) for t in s.topics))
    price = people.ticket_price(view)
    if price is not None:
        lines.append(f"🎟 Ticketed: {price}")
        lines += [terms.text(escape) for terms in people.subscriber_terms(view)]
    if s.state == SpaceState.LIVE:
        stage = [escape(p.name) + p.marks() for p in people.stage(view)]
        if stage:
            lines.append("On stage: " + ", ".join(stage))
        lines.append(f"👂 {view.listener_count} listening · ✋ {len(s.hands)} in queue")
        hands = [f"{i}. {escape(p.name)}{p.marks()}" for i, p in enumerate(people.queue(view), 1)]
        if hands:
            lines.append("Queue: " + ", ".join(hands))
        tallies = sorted(view.reactions.items(), key=lambda kv: (-kv[1], kv[0]))[:6]
        if tallies:
            lines.append("Reactions: " + " · ".join(f"{e} {c}" for e, c in tallies))
        for badge in view.badges.values():
            lines.append(escape(badge))
        if s.captions_enabled:
            lines.append("💬 Captions on" + "".join(
                f"\n<i>{escape(n.get(c['speaker_id'], c['speaker_id']))}:</i> {escape(c['text'][-300:])}"
                for c in view.captions))
    for p in s.pins:
        target = f" — {escape(p.url)}" if p.url else ""
        lines.append(f"📌 {escape(p.title)}{target}")
    text = "\n".join(lines)
    rows: list[list[InlineKeyboardButton]] = []
    for row in card_buttons(s):
        line = []
        for b in row:
            caption = f"{b.emoji} {b.label}".strip()
            if b.link:
                line.append(InlineKeyboardButton(caption, url=join_link(bot_username, s.id)))
            else:
                data = f"{b.kind}:{s.id}" + (f":{b.arg}" if b.arg else "")
                line.append(InlineKeyboardButton(caption, callback_data=data))
        rows.append(line)
    return text, (InlineKeyboardMarkup(rows) if rows else None)


def fingerprint(text: str, markup: InlineKeyboardMarkup | None) -> str:
    body = json.dumps([text, markup.to_dict() if markup else None], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def notice(template: str, data: dict[str, Any]) -> str:
    """The DM for a durable delivery, in the shared words (HTML)."""
    space_id = data.get("space_id")
    return chat_notice(template, data, HTML, when=when, start=f"/space start {space_id}",
                       refund=f"/refund {space_id}")
