"""The Telegram adapter: a python-telegram-bot ``Application`` that runs Spaces from chat.

Telegram bots cannot join voice chats, so on Telegram a Space is run from chat (commands and the
buttons on its live card), its followers are alerted by DM, tickets are sold in Stars, and the room
itself opens as a Mini App (the web room, signed in with Telegram's ``initData``).

``TelegramAdapter`` is its life (start, stop, the webhook) over units, as the Discord bot is:
commands (every table command, Telegram's own, plugins'), cards (and their buttons), payments
(Stars), the mini app and the notifier, each a class over ``TelegramBase``. Every command resolves
the caller to an ``Actor`` (group admins carry the ``admin`` platform role) and runs through the
command table, which decides; a ``DomainError`` becomes a reply in the shared words. All outgoing
requests go through ``FloodLimiter``, so replies, card edits and DMs share one budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from telegram import BotCommand, Update
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    ChatMemberHandler,
    MessageHandler,
    PreCheckoutQueryHandler,
    filters,
)

from adapters.telegram.base import PLATFORM, TelegramConfig
from adapters.telegram.cards import CARD_EVENTS, CardsMixin
from adapters.telegram.commands import COMMANDS, HELP, CommandsMixin, menu
from adapters.telegram.limits import FloodLimiter
from adapters.telegram.miniapp import MiniAppMixin
from adapters.telegram.notifier import NotifierMixin
from adapters.telegram.payments import PaymentsMixin
from billing.ledger import Ledger
from billing.stars_subscriptions import StarsSubscriptions
from core.cards import CardRefresher, CardStore
from core.errors import Invalid
from core.model.ticket import Provider
from core.redis_support import Duty
from core.services import Core
from core.tokens import JoinTokens

if TYPE_CHECKING:
    from plugins.manager import PluginManager

__all__ = ["CARD_EVENTS", "COMMANDS", "HELP", "PLATFORM", "TelegramAdapter", "TelegramConfig"]

log = logging.getLogger(__name__)


class TelegramAdapter(CommandsMixin, CardsMixin, PaymentsMixin, MiniAppMixin, NotifierMixin):
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
        self.stars_subs = StarsSubscriptions(core, ledger.fee_bps)
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
        self._admins = {}
        self._usernames = {}
        self.refresher = CardRefresher(self._refresh_cards, config.card_interval_s)
        # With several processes running the bot (webhook mode), one keeps the cards: posts, notices
        # and edits driven by events happen once (docs/deploy.md). One process: always this one.
        self.cards_duty = Duty("", "telegram-cards", "", ttl_s=5.0)
        self._started = False
        self._register()

    def _register(self) -> None:
        a = self.app
        self._register_commands()
        a.add_handler(CallbackQueryHandler(self.on_button))
        a.add_handler(PreCheckoutQueryHandler(self.on_pre_checkout))
        a.add_handler(MessageHandler(filters.SUCCESSFUL_PAYMENT, self.on_paid))
        a.add_handler(ChatMemberHandler(self.on_my_member, ChatMemberHandler.MY_CHAT_MEMBER))
        a.add_handler(MessageHandler(filters.COMMAND, self.on_unknown))
        a.add_error_handler(self.on_error)

    async def start(self) -> None:
        await self.app.initialize()
        self.username = self.app.bot.username
        await self.app.bot.set_my_commands([BotCommand(c, d) for c, d in menu(self.table)] +
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
