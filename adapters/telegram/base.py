"""What every part of the Telegram bot shares: who is asking, which Space, who is named, replies.

The bot is one ``TelegramAdapter`` made of units (commands, cards, payments, mini app, notifier),
each a class over this base, as the Discord bot is; the shared chat toolkit (adapters/chat) does
what Discord does too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from telegram import InlineKeyboardMarkup, Message, MessageEntity, Update
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import TelegramError
from telegram.ext import Application

from adapters.chat.actions import person
from adapters.chat.spaces import pick_space
from adapters.chat.wording import say as chat_say
from adapters.telegram.limits import FloodLimiter, FloodLimits
from adapters.telegram.webapp import DEFAULT_MAX_AGE_S
from billing.ledger import Ledger
from core.cards import CardRefresher, CardStore
from core.errors import DomainError, Invalid, NotFound
from core.model.accounts import Actor
from core.model.space import Space
from core.services import Core
from core.tokens import JoinTokens

if TYPE_CHECKING:
    from core.redis_support import Duty
    from plugins.manager import PluginManager

log = logging.getLogger(__name__)

PLATFORM = "telegram"
ADMIN_ROLE = "admin"
ADMIN_TTL_S = 60.0

_MISC_TEXT = {
    "telegram.which_space": "Which Space? Add its id, e.g. /{command} SPACE_ID (see /spaces).",
    "telegram.no_space_here": "There is no live Space in this chat. Start one with /space new \"title\".",
    "telegram.usage": "Usage: {usage}",
    "telegram.dm_first": "Open a private chat with me first ({link}), then try again.",
    "telegram.stars_only_private": "Stars invoices are sent in private chat: {link}",
}


def say(error: DomainError) -> str:
    """An error in the shared words, with Telegram's own codes."""
    return chat_say(error, _MISC_TEXT)


@dataclass
class TelegramConfig:
    token: str
    api_base: str | None = None  # e.g. a local Bot API server: http://127.0.0.1:8081/bot
    mode: str = "polling"  # or "webhook"
    webhook_secret: str = ""
    card_interval_s: float = 5.0
    webapp_max_age_s: int = DEFAULT_MAX_AGE_S
    limits: FloodLimits | None = None


def is_space_id(text: str) -> bool:
    return len(text) == 12 and text.isalnum()


class TelegramBase:
    """State every unit reads (set by ``TelegramAdapter.__init__``) and the helpers they share."""

    platform = PLATFORM
    core: Core
    ledger: Ledger
    tokens: JoinTokens
    public_url: str
    config: TelegramConfig
    stripe_sales: Any
    plugins: PluginManager | None
    limiter: FloodLimiter
    app: Application[Any, Any, Any, Any, Any, Any]
    cards: CardStore
    refresher: CardRefresher
    cards_duty: Duty
    username: str
    _admins: dict[tuple[int, int], tuple[bool, float]]
    _usernames: dict[str, tuple[str, str]]  # @username (lower case) -> (user id, full name): people seen here
    _started: bool

    # ---- who is asking -----------------------------------------------------------------------
    async def _is_admin(self, chat_id: int, user_id: int) -> bool:
        if chat_id > 0:
            return False
        key = (chat_id, user_id)
        hit = self._admins.get(key)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            member = await self.app.bot.get_chat_member(chat_id, user_id)
            admin = member.status in (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)
        except TelegramError:
            admin = False
        self._admins[key] = (admin, now + ADMIN_TTL_S)
        return admin

    async def _actor(self, update: Update) -> Actor:
        user = update.effective_user
        chat = update.effective_chat
        assert user is not None
        if user.username:
            self._usernames[user.username.lower()] = (str(user.id), user.full_name)
        account = await self.core.ensure_account(PLATFORM, str(user.id), user.full_name)
        admin = chat is not None and await self._is_admin(chat.id, user.id)
        return Actor(account_id=account.id, platform=PLATFORM,
                     platform_roles=frozenset({ADMIN_ROLE}) if admin else frozenset(), is_community_admin=admin)

    async def _community_id(self, update: Update) -> str | None:
        chat = update.effective_chat
        if chat is None or chat.type == ChatType.PRIVATE:
            return None
        c = await self.core.ensure_community(PLATFORM, str(chat.id), chat.title or str(chat.id))
        return c.id

    async def _space(self, update: Update, args: list[str], command: str, *,
                     states: tuple[str, ...] = ("live",), actor: Actor | None = None) -> Space:
        """The Space a command is about: an id among the arguments (removed from ``args``), else the
        one live (or scheduled, where allowed) in this group, else the caller's own."""
        for i, a in enumerate(args):
            if is_space_id(a):
                try:
                    space = (await self.core.view(a)).space
                except NotFound:
                    continue
                del args[i]
                return space
        return await pick_space(self.core, space_id=None, community_id=await self._community_id(update),
                                host_id=actor.account_id if actor is not None else None, states=states,
                                no_space_code="telegram.no_space_here", which_code="telegram.which_space",
                                command=command)

    async def _replied_to(self, update: Update) -> str | None:
        """The account of the person whose message this one replies to (not a bot's)."""
        msg = update.effective_message
        if msg is not None and msg.reply_to_message and msg.reply_to_message.from_user:
            u = msg.reply_to_message.from_user
            if not u.is_bot:
                return (await self.core.ensure_account(PLATFORM, str(u.id), u.full_name)).id
        return None

    async def _tapped(self, update: Update, args: list[str]) -> str | None:
        """The account of a tapped name (a ``text_mention``: someone with no @username); its words leave ``args``."""
        msg = update.effective_message
        if msg is None:
            return None
        for entity in msg.entities:
            if entity.type == MessageEntity.TEXT_MENTION and entity.user is not None:
                for word in msg.parse_entity(entity).split():
                    if word in args:
                        args.remove(word)
                u = entity.user
                return (await self.core.ensure_account(PLATFORM, str(u.id), u.full_name)).id
        return None

    async def _mentioned(self, token: str) -> str | None:
        """The account an ``@username`` means, if that person has written where the bot reads."""
        if not token.startswith("@") or len(token) < 2:
            return None
        known = self._usernames.get(token[1:].lower())
        if known is None:
            raise NotFound("chat.unknown_mention", mention=token)
        return (await self.core.ensure_account(PLATFORM, known[0], known[1])).id

    async def _who(self, update: Update, args: list[str], space: Space | None = None) -> str:
        """A person, the same way on every surface: a reply, a tapped name, an @mention of someone we
        know, a queue number or an account id (``args``' first word, removed)."""
        named = await self._replied_to(update) or await self._tapped(update, args)
        if named is not None:
            return named
        if args:
            a = args.pop(0)
            mentioned = await self._mentioned(a)
            return mentioned if mentioned is not None else await person(self.core, space, a)
        raise Invalid("chat.who")

    async def _reply(self, msg: Message, text: str, *, html: bool = True,
                     markup: InlineKeyboardMarkup | None = None) -> Message:
        return await msg.reply_text(text, parse_mode=ParseMode.HTML if html else None, reply_markup=markup,
                                    do_quote=msg.chat.type != ChatType.PRIVATE,
                                    disable_web_page_preview=True)

    def _mark(self, space_id: str) -> None:
        """A Space changed: its cards are edited once the coalescing interval has passed."""
        self.refresher.mark(space_id)

    # what one unit offers the others (the adapter's MRO puts the unit's own first)
    async def _post_card(self, chat_id: int, space_id: str) -> None:  # cards
        raise NotImplementedError

    async def _send_room(self, msg: Message, actor: Actor, space_id: str) -> None:  # mini app
        raise NotImplementedError

    async def cmd_ticket(self, update: Update, ctx: Any, actor: Actor, args: list[str]) -> None:  # payments
        raise NotImplementedError

    async def cmd_subscribe(self, update: Update, ctx: Any, actor: Actor, args: list[str]) -> None:  # subscriptions
        raise NotImplementedError

    async def cmd_unsubscribe(self, update: Update, ctx: Any, actor: Actor, args: list[str]) -> None:  # subscriptions
        raise NotImplementedError

    async def cmd_tiers(self, update: Update, ctx: Any, actor: Actor, args: list[str]) -> None:  # subscriptions
        raise NotImplementedError

    async def cmd_tier_create(self, update: Update, ctx: Any, actor: Actor, args: list[str]) -> None:  # subscriptions
        raise NotImplementedError

    async def cmd_tier_archive(self, update: Update, ctx: Any, actor: Actor, args: list[str]) -> None:  # subscriptions
        raise NotImplementedError

    async def cmd_tier_stars(self, update: Update, ctx: Any, actor: Actor, args: list[str]) -> None:  # subscriptions
        raise NotImplementedError
