"""The Telegram adapter: a python-telegram-bot ``Application`` that runs Spaces from chat.

Telegram bots cannot join voice chats, so on Telegram a Space is run from chat (commands and the
buttons on its live card), its followers are alerted by DM, tickets are sold in Stars, and the room
itself opens as a Mini App (the web room, signed in with Telegram's ``initData``).

Every command resolves the caller to an ``Actor`` (group admins carry the ``admin`` platform role)
and calls the core, which decides; a ``DomainError`` becomes a reply in the core's own words.
All outgoing requests go through ``FloodLimiter``, so replies, card edits and DMs share one budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import shlex
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from aiohttp import web
from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LabeledPrice,
    Message,
    Update,
    WebAppInfo,
)
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ChatMemberHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    PreCheckoutQueryHandler,
    filters,
)

from adapters.chat import buttons
from adapters.chat.actions import run
from adapters.chat.spaces import pick_space
from adapters.chat.wording import PLAIN, word
from adapters.chat.wording import say as chat_say
from adapters.telegram import render
from adapters.telegram.limits import BULK, FloodLimiter, FloodLimits, retry_seconds
from adapters.telegram.webapp import DEFAULT_MAX_AGE_S, validate_init_data
from adapters.webrtc.placement import Duty
from billing.ledger import Ledger
from core import events as ev
from core.cards import Card, CardRefresher, CardStore
from core.errors import Conflict, DomainError, Invalid, NotFound
from core.model.accounts import Actor
from core.model.space import Role, Space, SpaceState
from core.model.ticket import Provider, TicketStatus
from core.ports import Delivery, DeliveryResult
from core.services import Core
from core.timeparse import parse_when
from core.tokens import JoinTokens

if TYPE_CHECKING:
    from plugins.api import CommandSpec
    from plugins.manager import PluginManager

log = logging.getLogger(__name__)

PLATFORM = "telegram"
ADMIN_ROLE = "admin"
ADMIN_TTL_S = 60.0
JOIN_TOKEN_TTL_S = 15 * 60

COMMANDS: list[tuple[str, str]] = [
    ("start", "Start the bot (get alerts by DM)"),
    ("help", "What I can do"),
    ("spaces", "Live and upcoming Spaces here"),
    ("space", 'new "title" [when] · start ID — host a Space'),
    ("follow", "Follow a host (reply to them, or give their id)"),
    ("unfollow", "Stop following a host"),
    ("remind", "Remind me when a Space starts"),
    ("cancel", "Cancel a scheduled Space (host)"),
    ("end", "End a live Space (host)"),
    ("react", "React with an emoji"),
    ("hand", "Raise or lower your hand"),
    ("queue", "Who has a hand up"),
    ("approve", "Bring a raised hand on stage (host, co-host)"),
    ("deny", "Lower someone's hand (host, co-host)"),
    ("invite", "Invite someone to speak (host, co-host)"),
    ("promote", "Make someone a speaker or co-host: /promote WHO [cohost]"),
    ("demote", "Move someone back to the audience (host, co-host)"),
    ("mute", "Mute a speaker (host, co-host)"),
    ("remove", "Remove someone from the Space (host, co-host)"),
    ("pin", "Pin a link: /pin URL [title]"),
    ("unpin", "Unpin: /unpin NUMBER"),
    ("captions", "Captions on or off"),
    ("share", "Share a Space in this chat"),
    ("ticket", "Buy a ticket"),
    ("refund", "Ask for a refund of your ticket"),
    ("link", "Link your account across platforms"),
]
HELP = "\n".join(f"/{c} — {d}" for c, d in COMMANDS)

_MISC_TEXT = {
    "telegram.which_space": "Which Space? Add its id, e.g. /{command} SPACE_ID (see /spaces).",
    "telegram.no_space_here": "There is no live Space in this chat. Start one with /space new \"title\".",
    "telegram.usage": "Usage: {usage}",
    "telegram.who": "Say who: reply to their message, or give their queue number or account id.",
    "telegram.dm_first": "Open a private chat with me first ({link}), then try again.",
    "telegram.stars_only_private": "Stars invoices are sent in private chat: {link}",
}


def say(error: DomainError) -> str:
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


class TelegramAdapter:
    """One bot, started and stopped by ``spacebridge serve``; also the Telegram ``Notifier`` and the
    ``telegram_stars`` ``PaymentGateway``."""

    platform = PLATFORM
    provider = Provider.TELEGRAM_STARS.value

    def __init__(self, core: Core, ledger: Ledger, tokens: JoinTokens, public_url: str, config: TelegramConfig,
                 *, stripe_sales: Any = None, plugins: PluginManager | None = None) -> None:
        if config.mode not in ("polling", "webhook"):
            raise Invalid("telegram.bad_mode", mode=config.mode)
        self.core, self.ledger, self.tokens = core, ledger, tokens
        self.public_url = public_url.rstrip("/")
        self.config = config
        self.stripe_sales = stripe_sales
        self.plugins = plugins
        self.limiter = FloodLimiter(config.limits)
        builder = ApplicationBuilder().token(config.token).rate_limiter(self.limiter).concurrent_updates(32)
        if config.api_base:
            builder = builder.base_url(config.api_base).base_file_url(config.api_base.replace("/bot", "/file/bot"))
        if config.mode == "webhook":
            builder = builder.updater(None)
        self.app: Application[Any, Any, Any, Any, Any, Any] = builder.build()
        self.cards = CardStore(core, PLATFORM)
        self.username = ""
        self._admins: dict[tuple[int, int], tuple[bool, float]] = {}
        self.refresher = CardRefresher(self._refresh_cards, config.card_interval_s)
        # With several processes running the bot (webhook mode), one keeps the cards: posts, notices
        # and edits driven by events happen once (docs/deploy.md). One process: always this one.
        self.cards_duty = Duty("", "telegram-cards", "", ttl_s=5.0)
        self._started = False
        self._register()

    # ---- life ---------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.app.initialize()
        self.username = self.app.bot.username
        await self.app.bot.set_my_commands([BotCommand(c, d) for c, d in COMMANDS] +
                                           [BotCommand(c.name, c.description) for c in self._plugin_commands()])
        self.core.bus.subscribe(self._on_event, names=CARD_EVENTS)
        self.cards_duty.on_gain = self._catch_up
        await self.cards_duty.start()
        await self.app.start()
        if self.config.mode == "polling":
            assert self.app.updater is not None
            await self.app.updater.start_polling(allowed_updates=Update.ALL_TYPES, poll_interval=0.0, timeout=10)
        else:
            await self.app.bot.set_webhook(f"{self.public_url}/telegram/webhook", allowed_updates=Update.ALL_TYPES,
                                           secret_token=self.config.webhook_secret or None)
        self._started = True
        self.refresher.running = True
        for space_id in await self.cards.open_spaces():  # catch up on what changed while we were down
            self._mark(space_id)

    async def stop(self) -> None:
        if not self._started:
            return
        drain = getattr(self.core.bus, "drain", None)
        if drain is not None:  # let cards being posted be recorded, so a restart does not post them again
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drain(), 5.0)
        self._started = False
        await self.refresher.stop()
        await self.cards_duty.close()
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        await self.app.stop()
        await self.app.shutdown()

    async def handle_webhook(self, request: web.Request) -> web.Response:
        """``POST /telegram/webhook``: Telegram pushes updates here when running several workers."""
        if self.config.mode != "webhook":
            return web.json_response({"error": "webhook mode is off"}, status=404)
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not self.config.webhook_secret or not hmac.compare_digest(given, self.config.webhook_secret):
            return web.json_response({"error": "bad secret token"}, status=403)
        try:
            data = await request.json()
            update = Update.de_json(data, self.app.bot)
        except Exception:
            return web.json_response({"error": "not a Telegram update"}, status=400)
        if update is None:
            return web.json_response({"error": "not a Telegram update"}, status=400)
        await self.app.update_queue.put(update)
        return web.json_response({"ok": True})

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
            if len(a) == 12 and a.isalnum():
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

    async def _who(self, update: Update, args: list[str], space: Space | None = None) -> str:
        msg = update.effective_message
        if msg is not None and msg.reply_to_message and msg.reply_to_message.from_user:
            u = msg.reply_to_message.from_user
            if not u.is_bot:
                return (await self.core.ensure_account(PLATFORM, str(u.id), u.full_name)).id
        if args:
            a = args.pop(0)
            if a.isdigit() and space is not None and len(a) < 6:
                if not 1 <= int(a) <= len(space.hands):
                    raise NotFound("hand.no_such_position", position=int(a), queued=len(space.hands))
                return space.hands[int(a) - 1].account_id
            if len(a) == 12 and a.isalnum():
                return (await self.core.account(a)).id
        raise Invalid("telegram.who")

    # ---- handlers ----------------------------------------------------------------------------
    def _register(self) -> None:
        a = self.app
        table: dict[str, Callable[[Update, ContextTypes.DEFAULT_TYPE, Actor, list[str]], Awaitable[None]]] = {
            "start": self.cmd_start, "help": self.cmd_help, "spaces": self.cmd_spaces, "space": self.cmd_space,
            "follow": self.cmd_follow, "unfollow": self.cmd_unfollow, "remind": self.cmd_remind,
            "cancel": self.cmd_cancel, "end": self.cmd_end, "react": self.cmd_react, "hand": self.cmd_hand,
            "queue": self.cmd_queue, "approve": self.cmd_approve, "deny": self.cmd_deny, "invite": self.cmd_invite,
            "promote": self.cmd_promote, "demote": self.cmd_demote,
            "mute": self.cmd_mute, "remove": self.cmd_remove, "pin": self.cmd_pin, "unpin": self.cmd_unpin,
            "captions": self.cmd_captions, "share": self.cmd_share, "ticket": self.cmd_ticket,
            "refund": self.cmd_refund, "link": self.cmd_link,
        }
        for name, fn in table.items():
            a.add_handler(CommandHandler(name, self._wrap(fn)))
        a.add_handler(CallbackQueryHandler(self.on_button))
        a.add_handler(PreCheckoutQueryHandler(self.on_pre_checkout))
        a.add_handler(MessageHandler(filters.SUCCESSFUL_PAYMENT, self.on_paid))
        a.add_handler(ChatMemberHandler(self.on_my_member, ChatMemberHandler.MY_CHAT_MEMBER))
        a.add_handler(MessageHandler(filters.COMMAND, self.on_unknown))
        a.add_error_handler(self.on_error)

    def _wrap(self, fn: Callable[[Update, ContextTypes.DEFAULT_TYPE, Actor, list[str]], Awaitable[None]],
              ) -> Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]:
        async def handler(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            msg = update.effective_message
            if msg is None or update.effective_user is None:
                return
            try:
                actor = await self._actor(update)
                await fn(update, context, actor, list(context.args or []))
            except DomainError as e:
                await self._reply(msg, "⚠️ " + say(e), html=False)

        return handler

    async def _reply(self, msg: Message, text: str, *, html: bool = True,
                     markup: InlineKeyboardMarkup | None = None) -> Message:
        return await msg.reply_text(text, parse_mode=ParseMode.HTML if html else None, reply_markup=markup,
                                    do_quote=msg.chat.type != ChatType.PRIVATE,
                                    disable_web_page_preview=True)

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram update failed: %s", context.error, exc_info=context.error)
        if isinstance(update, Update) and update.effective_message is not None:
            with contextlib.suppress(TelegramError):
                await update.effective_message.reply_text("Something went wrong on our side; please try again.")

    def _plugin_commands(self) -> list[CommandSpec]:
        return self.plugins.command_list() if self.plugins is not None else []

    async def on_unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Commands the core does not know: a plugin's (registered at start), or a helpful list."""
        msg = update.effective_message
        if msg is None or not msg.text:
            return
        cmd, *args = msg.text.split()
        if "@" in cmd and cmd.split("@", 1)[1].lower() != self.username.lower():
            return  # addressed to another bot in the group
        name = cmd.split("@")[0].lstrip("/").lower()
        if self.plugins is not None and name in self.plugins.commands and update.effective_user is not None:
            try:
                await self.cmd_plugin(update, await self._actor(update), self.plugins.commands[name], args)
            except DomainError as e:
                await self._reply(msg, "⚠️ " + say(e), html=False)
            return
        extra = "".join(f"\n/{c.name} — {c.description}" for c in self._plugin_commands())
        await self._reply(msg, f"I don't know {cmd.split('@')[0]}. Here is what I can do:\n{HELP}{extra}", html=False)

    async def cmd_plugin(self, update: Update, actor: Actor, spec: CommandSpec, args: list[str]) -> None:
        """A plugin command: words after it fill its options in order (a member: reply, queue number or id)."""
        assert self.plugins is not None and update.effective_message is not None
        space = await self._space(update, args, spec.name, actor=actor, states=("live", "scheduled"))
        values: dict[str, Any] = {}
        texts = [o for o in spec.options if o.kind == "text"]
        for o in spec.options:
            if o.kind == "member":
                msg = update.effective_message
                if args or (msg.reply_to_message is not None):
                    values[o.name] = await self._who(update, args, space)
            elif not args:
                break
            elif o.kind == "text" and o is texts[-1]:
                values[o.name] = " ".join(args)
                args = []
            else:
                values[o.name] = args.pop(0)
        reply = await self.plugins.invoke(spec.name, actor, space.id, values, PLATFORM)
        text = reply.text + (f"\n{reply.url}" if reply.url else "")
        await self._reply(update.effective_message, text, html=False)

    async def on_my_member(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        m = update.my_chat_member
        if m is None or m.chat.type == ChatType.PRIVATE:
            return
        if m.new_chat_member.status in (ChatMemberStatus.MEMBER, ChatMemberStatus.ADMINISTRATOR) and \
                m.old_chat_member.status in (ChatMemberStatus.LEFT, ChatMemberStatus.BANNED):
            await self.core.ensure_community(PLATFORM, str(m.chat.id), m.chat.title or str(m.chat.id))
            await self.app.bot.send_message(
                m.chat.id, "👋 Spacebridge is here. Host a live audio Space with /space new \"title\" "
                           "(or schedule it: /space new \"title\" +2h). Everyone can follow hosts, react and raise a "
                           "hand from here; /help lists everything.")

    # ---- commands ----------------------------------------------------------------------------
    async def cmd_start(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        user = update.effective_user
        assert msg is not None and user is not None
        if msg.chat.type != ChatType.PRIVATE:
            await self._reply(msg, HELP, html=False)
            return
        await self.core.set_dm_opt_in(actor, PLATFORM, str(user.id), True)
        await self.core.set_reachable(PLATFORM, str(user.id), True)
        payload = args[0] if args else ""
        if payload.startswith("join_"):
            await self._send_room(msg, actor, payload[5:])
            return
        if payload.startswith("link_"):
            account = await self.core.redeem_link_code(actor, payload[5:])
            await self._reply(msg, f"✅ Linked: this Telegram account is now part of {account.display_name}'s account.",
                              html=False)
            return
        await self._reply(msg, "👋 Welcome to Spacebridge. You'll get a DM when hosts you follow go live.\n\n" + HELP,
                          html=False)

    async def _send_room(self, msg: Message, actor: Actor, space_id: str) -> None:
        view = await self.core.view(space_id)
        s = view.space
        if s.state != SpaceState.LIVE:
            text, _ = render.card(view, self.username)
            await self._reply(msg, text + "\n\nIt is not live yet; tap Remind me on its card or send "
                                          f"/remind {s.id}.")
            return
        await self.core.may_join(actor.account_id, s.id)
        role = s.role_of(actor.account_id) or Role.LISTENER
        token = self.tokens.issue(s.id, actor.account_id, "speaker" if role != Role.LISTENER else "listener",
                                  self.core.now(), ttl_s=JOIN_TOKEN_TTL_S)
        app_url = f"{self.public_url}/tg/app?space={s.id}"
        rows = [[InlineKeyboardButton("🎧 Open the room", web_app=WebAppInfo(app_url))],
                [InlineKeyboardButton("Open in the browser", url=f"{self.public_url}/s/{s.id}#t={token}")]]
        await self._reply(msg, f"🔴 <b>{escape(s.title)}</b> with {escape(view.host_name)}",
                          markup=InlineKeyboardMarkup(rows))

    async def cmd_help(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        assert update.effective_message is not None
        await self._reply(update.effective_message, HELP, html=False)

    async def cmd_spaces(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        community = await self._community_id(update)
        spaces = await self.core.list_spaces(community_id=community, include_unlisted=community is not None,
                                             limit=20)
        if not spaces:
            await self._reply(msg, "No live or upcoming Spaces here. Host one with /space new \"title\".", html=False)
            return
        lines = []
        for s in spaces:
            state = "🔴 live" if s.state == SpaceState.LIVE else f"🗓 {render.when(s.scheduled_for)}"
            lines.append(f"{state} · <b>{escape(s.title)}</b> · <code>{s.id}</code>")
        await self._reply(msg, "\n".join(lines))

    async def cmd_space(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None and msg.text is not None
        usage = '/space new "title" [when: +2h, in 3d, 2026-12-01T18:00Z] · /space start ID'
        rest = msg.text.split(None, 1)[1] if len(msg.text.split(None, 1)) > 1 else ""
        try:
            parts = shlex.split(rest)
        except ValueError:
            raise Invalid("telegram.usage", usage=usage) from None
        if not parts or parts[0] not in ("new", "start"):
            raise Invalid("telegram.usage", usage=usage)
        if parts[0] == "start":
            space = await self._space(update, parts[1:], "space start", states=("scheduled",), actor=actor)
            space = await self.core.start_space(actor, space.id)
            await self._reply(msg, f"🔴 <b>{escape(space.title)}</b> is live. Followers are being told.")
            return
        if len(parts) < 2:
            raise Invalid("telegram.usage", usage=usage)
        quoted = rest.lstrip().startswith("new") and rest.lstrip()[3:].lstrip()[:1] in ("'", '"')
        title, when_text = (parts[1], " ".join(parts[2:])) if quoted else (" ".join(parts[1:]), "")
        start_at = parse_when(when_text, self.core.now()) if when_text else None
        space = await self.core.create_space(actor, title, start_at=start_at,
                                             community_id=await self._community_id(update))
        if space.state == SpaceState.LIVE:
            await self._reply(msg, f"🔴 <b>{escape(space.title)}</b> is live (<code>{space.id}</code>). "
                                   "Followers are being told.")
        else:
            await self._reply(msg, f"🗓 <b>{escape(space.title)}</b> scheduled for "
                                   f"{render.when(space.scheduled_for)} (<code>{space.id}</code>).")
        if msg.chat.type == ChatType.PRIVATE:
            await self._post_card(msg.chat.id, space.id)

    async def cmd_follow(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        await self._follow(update, actor, args, True)

    async def cmd_unfollow(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor,
                           args: list[str]) -> None:
        await self._follow(update, actor, args, False)

    async def _follow(self, update: Update, actor: Actor, args: list[str], on: bool) -> None:
        msg = update.effective_message
        assert msg is not None
        try:
            host = await self._who(update, args)
        except Invalid:
            space = await self._space(update, args, "follow", states=("live", "scheduled"))
            host = space.host_id
        count = await self.core.follow(actor, host, on)
        name = (await self.core.account(host)).display_name
        await self._reply(msg, (f"✅ You follow {name} ({count} followers). I'll DM you when they go live."
                                if on else f"You no longer follow {name}."), html=False)

    async def cmd_remind(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        off = bool(args and args[0].lower() == "off")
        args = [a for a in args if a.lower() not in ("on", "off")]
        space = await self._space(update, args, "remind", states=("scheduled",), actor=actor)
        await self.core.set_reminder(actor, space.id, not off)
        await self._reply(msg, (f"🔔 I'll DM you when <b>{escape(space.title)}</b> starts." if not off
                                else f"No reminder for <b>{escape(space.title)}</b>."))

    async def cmd_cancel(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        space = await self._space(update, args, "cancel", states=("scheduled",), actor=actor)
        space = await self.core.cancel_space(actor, space.id)  # queues the ticket refunds itself
        await self._reply(msg, f"✖️ <b>{escape(space.title)}</b> is cancelled. Subscribers are being told"
                               + (" and every ticket is refunded." if space.ticketing else "."))

    async def cmd_end(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        space = await self._space(update, args, "end", actor=actor)
        space = await self.core.end_space(actor, space.id)
        await self._reply(msg, f"⏹ <b>{escape(space.title)}</b> has ended. Thanks for listening!")

    async def cmd_react(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        space = await self._space(update, args, "react", actor=actor)
        if not args:
            raise Invalid("telegram.usage", usage="/react EMOJI, e.g. /react 👏")
        tallies = await self.core.react(actor, space.id, args[0])
        await self._reply(msg, " · ".join(f"{e} {c}" for e, c in sorted(tallies.items(), key=lambda kv: -kv[1])),
                          html=False)

    async def cmd_hand(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        down = bool(args and args[0].lower() in ("down", "lower", "off"))
        args = [a for a in args if a.lower() not in ("up", "down", "lower", "off")]
        space = await self._space(update, args, "hand", actor=actor)
        raised = any(h.account_id == actor.account_id for h in space.hands)
        if down or raised:
            await self.core.lower_hand(actor, space.id)
            await self._reply(msg, "Hand lowered.", html=False)
            return
        pos = await self.core.raise_hand(actor, space.id)
        await self._reply(msg, f"✋ Hand raised: you are number {pos} in the queue.", html=False)

    async def cmd_queue(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        space = await self._space(update, args, "queue", actor=actor)
        view = await self.core.view(space.id)
        if not view.space.hands:
            await self._reply(msg, "No hands are up.", html=False)
            return
        lines = [f"{i}. {escape(view.names.get(h.account_id, h.account_id))} (<code>{h.account_id}</code>)"
                 for i, h in enumerate(view.space.hands, 1)]
        await self._reply(msg, "✋ Queue — /approve NUMBER brings someone up:\n" + "\n".join(lines))

    async def _stage(self, update: Update, actor: Actor, args: list[str], command: str,
                     act: Callable[[Space, str], Awaitable[Space]], done: str) -> None:
        msg = update.effective_message
        assert msg is not None
        space = await self._space(update, args, command, actor=actor)
        who = await self._who(update, args, space)
        await act(space, who)
        name = (await self.core.account(who)).display_name
        await self._reply(msg, done.format(name=name), html=False)

    async def cmd_approve(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor,
                          args: list[str]) -> None:
        await self._stage(update, actor, args, "approve", lambda s, w: self.core.approve(actor, s.id, w),
                          "🎙 {name} is now on stage.")

    async def cmd_deny(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        await self._stage(update, actor, args, "deny", lambda s, w: self.core.deny(actor, s.id, w),
                          "{name}'s hand was lowered.")

    async def cmd_invite(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor,
                         args: list[str]) -> None:
        await self._stage(update, actor, args, "invite", lambda s, w: self.core.invite(actor, s.id, w),
                          "📨 {name} is invited to speak.")

    async def cmd_promote(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor,
                          args: list[str]) -> None:
        role = "cohost" if any(a.lower() in ("cohost", "co-host") for a in args) else "speaker"
        args = [a for a in args if a.lower() not in ("cohost", "co-host", "speaker")]
        await self._table_person(update, actor, args, "promote", {"role": role})

    async def cmd_demote(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor,
                         args: list[str]) -> None:
        await self._table_person(update, actor, args, "demote")

    async def _table_person(self, update: Update, actor: Actor, args: list[str], command: str,
                            extra: dict[str, Any] | None = None) -> None:
        """A table command about one person, named by a reply, a queue number or an account id."""
        msg = update.effective_message
        assert msg is not None
        space = await self._space(update, args, command, actor=actor)
        who = await self._who(update, args, space)
        out = await run(self.core, actor, command, space, {"person": who, **(extra or {})})
        name = (await self.core.account(who)).display_name
        await self._reply(msg, word(out, PLAIN, name=name, title=space.title), html=False)

    async def cmd_mute(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        unmute = bool(args and args[0].lower() == "off")
        args = [a for a in args if a.lower() != "off"]
        await self._stage(update, actor, args, "mute", lambda s, w: self.core.mute(actor, s.id, w, not unmute),
                          "🔈 {name} is unmuted." if unmute else "🔇 {name} is muted.")

    async def cmd_remove(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor,
                         args: list[str]) -> None:
        block = bool(args and args[0].lower() == "block")
        args = [a for a in args if a.lower() != "block"]
        await self._stage(update, actor, args, "remove",
                          lambda s, w: self.core.remove(actor, s.id, w, block=block),
                          "{name} was removed" + (" and blocked." if block else "."))

    async def cmd_pin(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        space = await self._space(update, args, "pin", actor=actor)
        ref = None
        url = None
        if msg.reply_to_message is not None:
            r = msg.reply_to_message
            ref = r.link or f"telegram:{r.chat.id}:{r.message_id}"
            title = " ".join(args) or (r.text or r.caption or "Pinned message")[:80]
        else:
            if not args:
                raise Invalid("telegram.usage", usage="/pin URL [title], or reply to a message with /pin [title]")
            url = args[0]
            title = " ".join(args[1:]) or url
        await self.core.pin(actor, space.id, title, url=url, message_ref=ref)
        await self._reply(msg, f"📌 Pinned: {title}", html=False)

    async def cmd_unpin(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        space = await self._space(update, args, "unpin", actor=actor)
        if not args:
            raise Invalid("telegram.usage", usage="/unpin NUMBER (1 is the first pin on the card)")
        pid = args[0]
        if pid.isdigit() and 1 <= int(pid) <= len(space.pins):
            pid = space.pins[int(pid) - 1].id
        await self.core.unpin(actor, space.id, pid)
        await self._reply(msg, "Unpinned.", html=False)

    async def cmd_captions(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor,
                           args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        mode = [a.lower() for a in args if a.lower() in ("on", "off")]
        args = [a for a in args if a.lower() not in ("on", "off")]
        if not mode:
            raise Invalid("telegram.usage", usage="/captions on|off")
        space = await self._space(update, args, "captions", actor=actor)
        await self.core.set_captions(actor, space.id, mode[0] == "on")
        await self._reply(msg, f"💬 Captions {mode[0]}.", html=False)

    async def cmd_share(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        space = await self._space(update, args, "share", states=("live", "scheduled"), actor=actor)
        links = {"telegram": render.join_link(self.username, space.id), "web": f"{self.public_url}/s/{space.id}"}
        payload = await self.core.share(space.id, links)
        await self._reply(msg, payload.text(), html=False)
        await self._post_card(msg.chat.id, space.id)

    async def cmd_ticket(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        user = update.effective_user
        assert msg is not None and user is not None
        space = await self._space(update, args, "ticket", states=("live", "scheduled"), actor=actor)
        t = space.ticketing
        if t is None:
            raise Conflict("ticket.not_ticketed", space_id=space.id)
        if t.currency.upper() != "XTR":
            if self.stripe_sales is None:
                raise Conflict("billing.off", hint="this Space is priced in " + t.currency.upper())
            purchase = await self.stripe_sales.buy_with_checkout(actor, space.id, space.title)
            await self._reply(msg, f"🎟 Pay for <b>{escape(space.title)}</b> here (the seat is yours for "
                                   f"{int(self.ledger.checkout_hold_for.total_seconds() // 60)} min):",
                              markup=InlineKeyboardMarkup([[InlineKeyboardButton("Pay", url=purchase.url)]]))
            return
        ticket = await self.ledger.hold(actor, space.id, Provider.TELEGRAM_STARS.value)
        try:
            await self.app.bot.send_invoice(
                chat_id=user.id, title=space.title[:32], payload=ticket.id, currency="XTR",
                description=f"A ticket to the live Space “{space.title[:200]}” hosted on Spacebridge."[:255],
                prices=[LabeledPrice("Ticket", t.price_minor)], provider_token="")
        except Forbidden:
            await self.ledger.settle(ticket.id, paid=False)
            raise Conflict("telegram.dm_first", link=f"https://t.me/{self.username}?start=ticket") from None
        if msg.chat.type != ChatType.PRIVATE:
            await self._reply(msg, "🎟 I sent you the invoice in a private chat.", html=False)

    async def cmd_refund(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        space = await self._space(update, args, "refund", states=("scheduled", "live"), actor=actor)
        await self.ledger.request_refund(actor, space.id)
        await self._reply(msg, "💸 Your refund is on its way.", html=False)

    async def cmd_link(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        if args:
            account = await self.core.redeem_link_code(actor, args[0])
            await self._reply(msg, f"✅ Linked to {account.display_name}'s account.", html=False)
            return
        code = await self.core.issue_link_code(actor)
        await self._reply(msg, f"🔗 Your link code is <code>{code.code}</code> (valid 10 minutes, once). Enter it "
                               "on another platform: /link CODE on Discord, or `spacebridge account link` on the "
                               "web.")

    # ---- buttons -------------------------------------------------------------------------------
    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
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

    # ---- Stars payments --------------------------------------------------------------------------
    async def on_pre_checkout(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Must be answered within 10 s: checks only our own ledger, never a remote call."""
        q = update.pre_checkout_query
        if q is None:
            return
        try:
            ticket = await self.ledger.get(q.invoice_payload)
            now = self.core.now()
            if ticket.provider != Provider.TELEGRAM_STARS or q.currency != "XTR":
                raise Invalid("ticket.bad_provider", provider=q.currency, allowed=["XTR"])
            if q.total_amount != ticket.amount_minor:
                raise Invalid("ticket.amount_mismatch", expected=ticket.amount_minor, got=q.total_amount)
            account = await self.core.ensure_account(PLATFORM, str(q.from_user.id), q.from_user.full_name)
            if account.id != ticket.account_id:
                raise NotFound("ticket.not_found", ticket_id=ticket.id)
            if ticket.status == TicketStatus.PAID:
                raise Conflict("ticket.already_paid", space_id=ticket.space_id, ticket_id=ticket.id)
            if not ticket.holds_seat(now):
                raise Conflict("ticket.hold_expired", space_id=ticket.space_id)
            space = (await self.core.view(ticket.space_id)).space
            if not space.is_open:
                raise Conflict("space.closed", space_id=space.id, state=space.state.value)
        except DomainError as e:
            await q.answer(ok=False, error_message=say(e)[:200])
            return
        await q.answer(ok=True)

    async def on_paid(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        msg = update.effective_message
        if msg is None or msg.successful_payment is None or msg.from_user is None:
            return
        sp = msg.successful_payment
        try:
            ticket = await self.ledger.settle(sp.invoice_payload, paid=True,
                                              provider_ref=f"{msg.from_user.id}:{sp.telegram_payment_charge_id}",
                                              amount_minor=sp.total_amount, currency=sp.currency)
        except DomainError as e:
            log.error("Stars payment %s could not be settled: %s", sp.telegram_payment_charge_id, e)
            await self._reply(msg, "⚠️ " + say(e), html=False)
            return
        if ticket.status == TicketStatus.PAID:
            view = await self.core.view(ticket.space_id)
            await self._reply(msg, f"🎟 Ticket confirmed for <b>{escape(view.space.title)}</b>. "
                                   "I'll DM you when it goes live.")
        else:
            await self._reply(msg, "The seat was no longer available, so your Stars are being refunded.", html=False)

    async def refund(self, provider_ref: str, amount_minor: int, idempotency_key: str, reason: str) -> str:
        """``PaymentGateway`` for Stars; a charge already refunded counts as done (the job may re-run)."""
        user_id, _, charge = provider_ref.partition(":")
        if not user_id.isdigit() or not charge:
            raise Invalid("ticket.bad_ref", provider_ref=provider_ref)
        try:
            await self.app.bot.refund_star_payment(int(user_id), charge)
        except BadRequest as e:
            if "ALREADY_REFUNDED" not in str(e).upper():
                raise
        return f"stars-refund:{charge}"

    # ---- notices (the Notifier port) ------------------------------------------------------------
    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        data = delivery.data
        markup = None
        if delivery.template == "space.live" and data.get("space_id") and self.username:
            markup = InlineKeyboardMarkup([[InlineKeyboardButton(
                "🎧 Join", url=render.join_link(self.username, str(data["space_id"])))]])
        try:
            await self.app.bot.send_message(int(delivery.external_id), render.notice(delivery.template, data),
                                            parse_mode=ParseMode.HTML, reply_markup=markup, rate_limit_args=BULK)
        except Forbidden as e:
            return DeliveryResult("unreachable", detail=str(e))
        except RetryAfter as e:
            return DeliveryResult("retry", retry_after_s=retry_seconds(e), detail="Telegram asked us to slow down")
        except BadRequest as e:
            if "chat not found" in str(e).lower() or "user is deactivated" in str(e).lower():
                return DeliveryResult("unreachable", detail=str(e))
            raise
        except NetworkError as e:
            return DeliveryResult("retry", retry_after_s=5.0, detail=str(e))
        return DeliveryResult("sent")

    # ---- live cards -------------------------------------------------------------------------------
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
                await self.app.bot.send_message(int(card.chat_id), f"ℹ️ {event.text}",
                                                reply_to_message_id=int(card.message_id),
                                                allow_sending_without_reply=True)
            except TelegramError as e:
                log.warning("could not post a notice for %s in %s: %s", event.space_id, card.chat_id, e)

    def _mark(self, space_id: str) -> None:
        """A Space changed: its cards are edited once the coalescing interval has passed."""
        self.refresher.mark(space_id)

    async def _refresh_cards(self, space_id: str) -> bool:
        """Edit every card of the Space that shows something out of date; True once it has closed."""
        try:
            view = await self.core.view(space_id)
        except NotFound:
            return True
        text, markup = render.card(view, self.username)
        fp = render.fingerprint(text, markup)
        for card in await self.cards.for_space(space_id):
            if card.rendered == fp:
                continue
            await self._edit(card, text, markup, fp)
        return view.space.state in (SpaceState.ENDED, SpaceState.CANCELLED)

    async def _edit(self, card: Card, text: str, markup: InlineKeyboardMarkup | None, fp: str) -> None:
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

    # ---- Mini App sign-in --------------------------------------------------------------------------
    async def webapp_session(self, request: web.Request) -> web.Response:
        """``POST /api/telegram/webapp`` {init_data, space_id} -> {url}: a join link for this user."""
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError
            init_data, space_id = str(body.get("init_data") or ""), str(body.get("space_id") or "")
        except ValueError:
            return web.json_response({"error": {"code": "protocol.bad_argument", "message": "Send JSON."}},
                                     status=400)
        try:
            user = validate_init_data(init_data, self.config.token, self.core.now(), self.config.webapp_max_age_s)
            space_id = space_id or (user.start_param or "")
            if not space_id:
                raise Invalid("telegram.which_space", command="start")
            account = await self.core.ensure_account(PLATFORM, str(user.id), user.name)
            view = await self.core.view(space_id)
            await self.core.may_join(account.id, space_id)
        except DomainError as e:
            status = {"forbidden": 403, "not_found": 404, "conflict": 409}.get(e.kind, 400)
            return web.json_response({"error": {**e.as_dict(), "message": say(e)}}, status=status)
        role = view.space.role_of(account.id) or Role.LISTENER
        token = self.tokens.issue(space_id, account.id, "speaker" if role != Role.LISTENER else "listener",
                                  self.core.now(), ttl_s=JOIN_TOKEN_TTL_S)
        return web.json_response({"url": f"/s/{space_id}#t={token}", "token": token, "account_id": account.id,
                                  "title": view.space.title})


CARD_EVENTS = (
    "space.scheduled", "space.rescheduled", "space.started", "space.ended", "space.cancelled", "space.updated",
    "participant.joined", "participant.left", "role.changed", "speaker.muted", "hand.raised", "hand.lowered",
    "reaction.sent", "pin.added", "pin.removed", "captions.toggled", "account.blocked", "caption.line",
    "space.badge", "space.notice",
)
