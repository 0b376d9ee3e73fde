"""The words both chat bots say, once: errors (``core.messages.describe`` plus the surface's own
codes) and the outcome of each table command. A ``Style`` is the surface's markup hook: Telegram
writes HTML, Discord Markdown, so the sentences are the same and only the emphasis differs."""

from __future__ import annotations

import html
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.command_model import Outcome
from core.errors import DomainError
from core.messages import describe


@dataclass(frozen=True)
class Style:
    """How a surface emphasises: ``bold`` a title, ``code`` an id; both escape what they wrap, as
    ``text`` escapes plain words."""

    bold: Callable[[str], str]
    code: Callable[[str], str]
    text: Callable[[str], str] = lambda s: s


HTML = Style(bold=lambda s: f"<b>{html.escape(s)}</b>", code=lambda s: f"<code>{html.escape(s)}</code>",
             text=html.escape)
PLAIN = Style(bold=lambda s: s, code=lambda s: s)


def markdown(escape: Callable[[str], str]) -> Style:
    """Discord's Markdown, with the library's own escaping."""
    return Style(bold=lambda s: f"**{escape(s)}**", code=lambda s: f"`{s}`", text=escape)


# after the name of one of the host's paying subscribers (SpaceView.subscribers): the web room's words
SUBSCRIBER_BADGE = " · subscriber"


def queue(hands: Sequence[tuple[str, str]], style: Style, *, approve: str,
          subscribers: Collection[str] = ()) -> str:
    """The raised hands (account id, name) in order, numbered as every surface names them; the host's
    paying subscribers (``SpaceView.subscribers``) badged."""
    if not hands:
        return "No hands are up."
    lines = [f"{i}. {style.text(name)}{SUBSCRIBER_BADGE if account_id in subscribers else ''} "
             f"({style.code(account_id)})" for i, (account_id, name) in enumerate(hands, 1)]
    return f"✋ Queue — {approve} brings someone up:\n" + "\n".join(lines)


def notice(template: str, data: Mapping[str, Any], style: Style, *, when: Callable[[datetime | None], str],
           start: str, refund: str = "") -> str:
    """The DM for a durable delivery (go-live alert, reminders, changes of plan), the same on both bots.

    ``when`` writes a time the surface's way; ``start``/``refund`` say how to type those commands there."""
    title = style.bold(str(data.get("title", "a Space")))
    host = style.text(str(data.get("host_name", "the host")))
    starts = data.get("scheduled_for")
    at = when(datetime.fromisoformat(starts)) if starts else "soon"
    texts = {
        "space.live": f"🔴 {host} is live now: {title}",
        "space.reminder": (f"🔔 {title} by {host} starts in {data.get('minutes')} min ({at})."
                           if data.get("minutes") else f"🔔 {title} by {host} is about to start ({at})."),
        "space.host_reminder": f"⏰ Your Space {title} starts in {data.get('minutes', 0)} min. Start it with {start}",
        "space.cancelled": f"✖️ {host} cancelled {title}.",
        "space.rescheduled": f"🗓 {title} by {host} moved to {at}. Ticket holders may ask for a refund"
                             + (f" with {refund}" if refund else "."),
    }
    return texts.get(template, f"{title}: {style.text(template)}")


CHAT_TEXT: dict[str, str] = {
    "chat.who": "Say who: reply to their message, or give their queue number or account id.",
    "chat.unknown_mention": "I don't know {mention} yet (they have not written here since I started): reply to "
                            "their message, or give their queue number or account id.",
}


def say(error: DomainError, extra: Mapping[str, str] | None = None) -> str:
    """An error in words: the surface's own codes (``extra``), the toolkit's, then the core's."""
    return describe(error, {**CHAT_TEXT, **(extra or {})})


def warn(error: DomainError, extra: Mapping[str, str] | None = None) -> str:
    """The reply to a refused command."""
    return "⚠️ " + say(error, extra)


def tallies(counts: Mapping[str, int]) -> str:
    """Reaction tallies, most first: ``👏 2 · 💯 1``."""
    return " · ".join(f"{e} {c}" for e, c in sorted(counts.items(), key=lambda kv: -kv[1]))


_ROLE_WORDS = {"cohost": "a co-host", "speaker": "a speaker"}
# outcome code -> sentence; {name}: the person acted on, {title}: the Space (already styled)
_OUTCOMES: dict[str, str] = {
    "hand.raised": "✋ Hand raised: you are number {position} in the queue.",
    "hand.lowered": "Hand lowered.",
    "stage.approved": "🎙 {name} is now on stage.",
    "stage.denied": "{name}'s hand was lowered.",
    "stage.invited": "📨 {name} is invited to speak.",
    "stage.joined": "🎙 You are on stage.",
    "stage.promoted": "⬆️ {name} is now {role_word}.",
    "stage.demoted": "⬇️ {name} is back in the audience.",
    "stage.stepped_down": "You left the stage.",
    "stage.muted": "🔇 {name} is muted.",
    "stage.unmuted": "🔈 {name} is unmuted.",
    "stage.all_muted": "🔇 Everyone on stage is muted.",
    "queue.cleared": "Every hand is lowered.",
    "queue.subscriber_priority_on": "⭐ The host's subscribers' raised hands now go first in the queue.",
    "queue.subscriber_priority_off": "The queue is back in the order hands went up.",
    "comment.posted": "💬 Said in {title}.",
    "pin.added": "📌 Pinned: {pin_title}",
    "pin.removed": "Unpinned.",
    "captions.on": "💬 Captions on.",
    "captions.off": "💬 Captions off.",
    "space.started": "🔴 {title} is live. Followers are being told.",
    "space.ended_by_host": "⏹ {title} has ended. Thanks for listening!",
    "space.rescheduled": "🗓 {title} moved.",
    "reminder.on": "🔔 I'll DM you when {title} starts.",
    "reminder.off": "No reminder for {title}.",
    "follow.on": "✅ You follow {name} ({followers} followers). I'll DM you when they go live.",
    "follow.off": "You no longer follow {name}.",
    "ticket.refund_requested": "💸 Your refund is on its way.",
    "link.linked": "✅ Linked to {name}'s account.",
    "link.code": "🔗 Your link code is {code_styled} (valid 10 minutes, once). Enter it on another platform "
                 "(/link CODE on Telegram, /space link on Discord, or `spacebridge account link` on the web).",
}


def word(outcome: Outcome, style: Style, *, name: str = "", title: str = "", pin_title: str = "",
         ticketed: bool = False) -> str:
    """The reply to a command that worked, in the same words on every chat surface."""
    d: dict[str, Any] = dict(outcome.data)
    if outcome.code == "reaction.sent":
        return tallies(outcome.result or {})
    if outcome.code == "person.removed":
        return f"{name} was removed" + (" and blocked." if d.get("blocked") else ".")
    if outcome.code == "space.cancelled":
        return f"✖️ {style.bold(title)} is cancelled. Subscribers are being told" + (
            " and every ticket is being refunded." if ticketed else ".")
    template = _OUTCOMES.get(outcome.code)
    if template is None:
        return "Done."
    d.update(name=name, title=style.bold(title), pin_title=pin_title,
             role_word=_ROLE_WORDS.get(str(d.get("role")), str(d.get("role"))),
             code_styled=style.code(str(d.get("code", ""))))
    return template.format(**d)
