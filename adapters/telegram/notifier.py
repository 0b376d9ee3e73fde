"""The Telegram ``Notifier``: DMs the core asks for (a followed host is live, a reminder, a refund),
paced as bulk traffic by the ``FloodLimiter`` and mapped to the shared delivery results."""

from __future__ import annotations

from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter

from adapters.chat.delivery import SENT, retry, unreachable
from adapters.telegram import render
from adapters.telegram.base import TelegramBase
from adapters.telegram.limits import BULK, retry_seconds
from core.ports import Delivery, DeliveryResult


class NotifierMixin(TelegramBase):
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
            return unreachable(str(e))
        except RetryAfter as e:
            return retry("Telegram asked us to slow down", retry_seconds(e))
        except BadRequest as e:
            if "chat not found" in str(e).lower() or "user is deactivated" in str(e).lower():
                return unreachable(str(e))
            raise
        except NetworkError as e:
            return retry(str(e))
        return SENT
