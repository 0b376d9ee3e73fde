"""Live cards in Telegram chats: posted when a Space of a group is scheduled or starts, kept current
through the shared ``CardKeeper`` (coalesced edits), notices as replies to them, and their buttons
(the shared ``adapters.chat.buttons``: join, hand, the one reaction set, remind)."""

from __future__ import annotations

import logging

from telegram import InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import ContextTypes

from adapters.chat import buttons
from adapters.chat.cards import CardKeeper, notice_text
from adapters.chat.wording import PLAIN
from adapters.telegram import render
from adapters.telegram.base import PLATFORM, TelegramBase, say
from core import events as ev
from core.cards import Card
from core.errors import DomainError
from core.services import SpaceView

log = logging.getLogger(__name__)

Payload = tuple[str, InlineKeyboardMarkup | None]

CARD_EVENTS = (
    "space.scheduled", "space.rescheduled", "space.started", "space.ended", "space.cancelled", "space.updated",
    "participant.joined", "participant.left", "role.changed", "speaker.muted", "hand.raised", "hand.lowered",
    "reaction.sent", "pin.added", "pin.removed", "captions.toggled", "account.blocked", "caption.line",
    "space.badge", "space.notice", "queue.subscriber_priority", "subscriber.changed",
)


class CardsMixin(TelegramBase):
    def _keeper(self) -> CardKeeper[Payload]:
        return CardKeeper(self.core, self.cards, self._render, self._edit_card)

    def _render(self, view: SpaceView) -> tuple[Payload, str]:
        text, markup = render.card(view, self.username)
        return (text, markup), render.fingerprint(text, markup)

    async def _post_card(self, chat_id: int, space_id: str) -> None:
        if await self.cards.in_chat(str(chat_id), space_id) is not None:
            self._mark(space_id)
            return
        view = await self.core.view(space_id)
        text, markup = render.card(view, self.username)
        m = await self.app.bot.send_message(chat_id, text, parse_mode=ParseMode.HTML, reply_markup=markup,
                                            disable_web_page_preview=True)
        await self.cards.add(str(chat_id), str(m.message_id), space_id, render.fingerprint(text, markup))
        self._mark(space_id)  # changes made while it was being posted found no card to edit

    async def _catch_up(self) -> None:
        """Took over the cards from a process that stopped: bring them all up to date."""
        for space_id in await self.cards.open_spaces():
            self._mark(space_id)

    async def _on_event(self, event: ev.Event) -> None:
        if not isinstance(event, ev.SpaceEvent) or not self._started or not self.cards_duty.held:
            return
        if isinstance(event, ev.SpaceScheduled | ev.SpaceStarted):
            try:
                view = await self.core.view(event.space_id)
                if view.space.community_id:
                    community = await self.core.community(view.space.community_id)
                    if community.platform == PLATFORM:
                        await self._post_card(int(community.external_id), event.space_id)
            except (DomainError, TelegramError) as e:
                log.warning("could not post the card for %s: %s", event.space_id, e)
        if isinstance(event, ev.SpaceNotice):
            await self._post_notice(event)
            return
        self._mark(event.space_id)

    async def _post_notice(self, event: ev.SpaceNotice) -> None:
        """Tell the chats showing the Space (a notice for one person is shown to them in the web room)."""
        if event.account_id is not None:
            return
        for card in await self.cards.for_space(event.space_id):
            try:
                await self.app.bot.send_message(int(card.chat_id), notice_text(event.text),
                                                reply_to_message_id=int(card.message_id),
                                                allow_sending_without_reply=True)
            except TelegramError as e:
                log.warning("could not post a notice for %s in %s: %s", event.space_id, card.chat_id, e)

    async def _refresh_cards(self, space_id: str) -> bool:
        """Edit every card of the Space that shows something out of date; True once it has closed."""
        return await self._keeper().refresh(space_id)

    async def _edit_card(self, card: Card, payload: Payload, fp: str) -> None:
        text, markup = payload
        try:
            await self.app.bot.edit_message_text(text, chat_id=int(card.chat_id), message_id=int(card.message_id),
                                                 parse_mode=ParseMode.HTML, reply_markup=markup,
                                                 disable_web_page_preview=True)
        except BadRequest as e:
            s = str(e).lower()
            if "not modified" in s:
                pass
            elif "not found" in s or "can't be edited" in s:
                await self.cards.drop(card)
                return
            else:
                raise
        except Forbidden:  # the bot was removed from the group
            await self.cards.drop(card)
            return
        await self.cards.rendered(card, fp)

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A card button: the shared meaning of each press, run through the command table."""
        q = update.callback_query
        if q is None or not q.data:
            return
        kind, space_id, arg = buttons.parse(q.data)
        try:
            actor = await self._actor(update)
            answer = await buttons.press(self.core, actor, kind, space_id, arg, PLAIN)
        except DomainError as e:
            await q.answer(say(e)[:200], show_alert=True)
            return
        await q.answer(answer[:200])
