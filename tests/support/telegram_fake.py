"""A local Bot API server that the unmodified python-telegram-bot talks to over real HTTP.

It speaks the wire protocol the library uses (``POST /bot<token>/<method>``, form-encoded
parameters with JSON-encoded values, ``{"ok": ..., "result": ...}`` answers), serves
``getUpdates`` from a script the test writes, records every call with its parameters, and can
answer the way Telegram does when something is wrong: 401 for a bad token, 400 for a message that
is not modified or not found, 403 for a user who blocked the bot, and 429 with ``retry_after``
when the flood limits are broken (overall per second, per chat per second, per group per minute)
or when a test asks for one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.stripe_fake import free_port

BOT_ID = 7000001
SENDING = frozenset({
    "sendMessage", "editMessageText", "editMessageReplyMarkup", "sendInvoice", "pinChatMessage", "sendPhoto",
    "deleteMessage", "unpinChatMessage",
})
INT_PARAMS = frozenset({"chat_id", "message_id", "user_id", "offset", "limit", "timeout", "cache_time",
                        "subscription_period"})


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    at: float
    status: int = 200


@dataclass
class Limits:
    """Telegram's published flood limits, enforced on the time each request arrives."""

    overall_per_s: int = 30
    chat_per_s: int = 1
    group_per_min: int = 20


@dataclass
class _Windows:
    overall: deque[float] = field(default_factory=deque)
    chats: dict[int, deque[float]] = field(default_factory=dict)
    groups: dict[int, deque[float]] = field(default_factory=dict)


class BotAPIError(Exception):
    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.parameters = status, description, parameters


class FakeBotAPI:
    def __init__(self, token: str = "7000001:TEST-token_abcdefghijklmnopqrstuv", *, username: str = "spacebridge_bot",
                 limits: Limits | None = None) -> None:
        self.token = token
        self.username = username
        self.limits = limits  # None: no flood limits (flow tests); set: enforced like Telegram
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._new_update = asyncio.Condition()
        self._new_call = asyncio.Condition()
        self._msg_ids: dict[int, itertools.count[int]] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.blocked: set[int] = set()
        self.admins: dict[int, set[int]] = {}
        self.forced_429: dict[str, float] = {}  # method -> retry_after, answered once
        self.charges: dict[str, dict[str, Any]] = {}  # Stars charges: id -> {user_id, amount, refunded}
        self.invoice_links: dict[str, dict[str, Any]] = {}  # createInvoiceLink: link -> its parameters
        # Stars subscriptions, by their first charge: {user_id, payload, canceled}
        self.star_subscriptions: dict[str, dict[str, Any]] = {}
        self.rejected_429 = 0
        self._windows = _Windows()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.webhook: dict[str, Any] | None = None

    # ---- life -----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    async def start(self) -> FakeBotAPI:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- scripting updates --------------------------------------------------------------------
    async def push(self, update: dict[str, Any]) -> int:
        uid = next(self._update_ids)
        update = {"update_id": uid, **update}
        async with self._new_update:
            self.updates.append(update)
            self._new_update.notify_all()
        return uid

    @staticmethod
    def user(uid: int, name: str = "") -> dict[str, Any]:
        return {"id": uid, "is_bot": False, "first_name": name or f"User{uid}", "language_code": "en"}

    @staticmethod
    def chat(cid: int, title: str = "") -> dict[str, Any]:
        if cid > 0:
            return {"id": cid, "type": "private", "first_name": f"User{cid}"}
        return {"id": cid, "type": "supergroup", "title": title or f"Group {cid}"}

    async def send_text(self, chat_id: int, user_id: int, text: str, *, name: str = "",
                        title: str = "") -> int:
        """A user types ``text`` in a chat (commands get their ``bot_command`` entity); returns its message id."""
        msg_id = self._next_msg(chat_id)
        message: dict[str, Any] = {"message_id": msg_id, "date": int(time.time()), "chat": self.chat(chat_id, title),
                                   "from": self.user(user_id, name), "text": text}
        if text.startswith("/"):
            cmd = text.split()[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(cmd)}]
        await self.push({"message": message})
        return msg_id

    async def press(self, chat_id: int, user_id: int, message_id: int, data: str) -> int:
        """A user presses an inline button under the bot's message."""
        msg = self.messages.get((chat_id, message_id)) or {
            "message_id": message_id, "date": int(time.time()), "chat": self.chat(chat_id)}
        return await self.push({"callback_query": {
            "id": f"cq{next(self._update_ids)}", "from": self.user(user_id), "chat_instance": str(chat_id),
            "message": {k: v for k, v in msg.items() if k != "_edits"}, "data": data}})

    async def pre_checkout(self, user_id: int, payload: str, total: int, currency: str = "XTR") -> str:
        qid = f"pcq{next(self._update_ids)}"
        await self.push({"pre_checkout_query": {"id": qid, "from": self.user(user_id), "currency": currency,
                                                "total_amount": total, "invoice_payload": payload}})
        return qid

    async def paid(self, user_id: int, payload: str, total: int, charge_id: str, currency: str = "XTR") -> int:
        self.charges[charge_id] = {"user_id": user_id, "amount": total, "refunded": False}
        return await self.push({"message": {
            "message_id": self._next_msg(user_id), "date": int(time.time()), "chat": self.chat(user_id),
            "from": self.user(user_id), "successful_payment": {
                "currency": currency, "total_amount": total, "invoice_payload": payload,
                "telegram_payment_charge_id": charge_id, "provider_payment_charge_id": ""}}})

    async def subscription_paid(self, user_id: int, payload: str, total: int, charge_id: str, expires: int, *,
                                first_charge: str | None = None, date: int | None = None) -> int:
        """A Stars subscription payment: the first (``first_charge`` None) or a renewal of the
        subscription that began with ``first_charge``, paid until ``expires`` (Unix time). Telegram
        renews only a subscription that was not cancelled."""
        if first_charge is None:
            self.star_subscriptions[charge_id] = {"user_id": user_id, "payload": payload, "canceled": False}
        elif self.star_subscriptions[first_charge]["canceled"]:
            raise AssertionError("Telegram does not renew a cancelled subscription")
        self.charges[charge_id] = {"user_id": user_id, "amount": total, "refunded": False}
        return await self.push({"message": {
            "message_id": self._next_msg(user_id), "date": date or int(time.time()), "chat": self.chat(user_id),
            "from": self.user(user_id), "successful_payment": {
                "currency": "XTR", "total_amount": total, "invoice_payload": payload,
                "telegram_payment_charge_id": charge_id, "provider_payment_charge_id": "",
                "subscription_expiration_date": expires, "is_recurring": True,
                "is_first_recurring": first_charge is None}}})

    async def bot_added(self, chat_id: int, by_user: int, title: str = "") -> int:
        return await self.push({"my_chat_member": {
            "chat": self.chat(chat_id, title), "from": self.user(by_user), "date": int(time.time()),
            "old_chat_member": {"status": "left", "user": self._me()},
            "new_chat_member": {"status": "member", "user": self._me()}}})

    # ---- reading what the bot did -------------------------------------------------------------
    def sent(self, method: str | None = None, *, chat_id: int | None = None) -> list[Call]:
        return [c for c in self.calls if c.status == 200 and (method is None or c.method == method)
                and (chat_id is None or c.params.get("chat_id") == chat_id)]

    async def wait_for(self, pred: Callable[[Call], bool], timeout: float = 10.0, after: int = 0) -> Call:
        """The first successful call (from index ``after``) matching ``pred``."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._new_call:
            while True:
                for c in self.calls[after:]:
                    if c.status == 200 and pred(c):
                        return c
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    recent = [(c.method, c.status, c.params.get("chat_id"), str(c.params.get("text", ""))[:80])
                              for c in self.calls[-8:]]
                    raise TimeoutError(f"no matching Bot API call in {timeout}s; last calls: {recent}")
                try:
                    await asyncio.wait_for(self._new_call.wait(), left)
                except TimeoutError:
                    pass

    async def reply_to(self, chat_id: int, after: int, timeout: float = 10.0,
                       method: str = "sendMessage") -> Call:
        return await self.wait_for(lambda c: c.method == method and c.params.get("chat_id") == chat_id,
                                   timeout, after)

    # ---- the server ------------------------------------------------------------------------------
    def _me(self) -> dict[str, Any]:
        return {"id": BOT_ID, "is_bot": True, "first_name": "Spacebridge", "username": self.username,
                "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

    def _next_msg(self, chat_id: int) -> int:
        return next(self._msg_ids.setdefault(chat_id, itertools.count(1)))

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            raw: dict[str, Any] = await request.json()
            return raw
        form = await request.post()
        out: dict[str, Any] = {}
        for k, v in form.items():
            s = str(v)
            if k in INT_PARAMS:
                try:
                    out[k] = int(s)
                    continue
                except ValueError:
                    pass
            if s[:1] in "[{" or s in ("true", "false"):
                try:
                    out[k] = json.loads(s)
                    continue
                except ValueError:
                    pass
            out[k] = s
        return out

    async def _record(self, call: Call) -> None:
        async with self._new_call:
            self.calls.append(call)
            self._new_call.notify_all()

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        call = Call(method, params, time.monotonic())
        try:
            if request.match_info["token"] != self.token:
                raise BotAPIError(401, "Unauthorized")
            fn = getattr(self, f"_m_{method}", None)
            if fn is None:
                raise BotAPIError(404, "Not Found: method not found")
            self._flood_check(method, params, call.at)
            result = await fn(params) if asyncio.iscoroutinefunction(fn) else fn(params)
        except BotAPIError as e:
            call.status = e.status
            await self._record(call)
            body: dict[str, Any] = {"ok": False, "error_code": e.status, "description": e.description}
            if e.parameters:
                body["parameters"] = e.parameters
            return web.json_response(body, status=e.status)
        await self._record(call)
        return web.json_response({"ok": True, "result": result})

    def _flood_check(self, method: str, params: dict[str, Any], now: float) -> None:
        if method in self.forced_429:
            retry = self.forced_429.pop(method)
            self.rejected_429 += 1
            raise BotAPIError(429, f"Too Many Requests: retry after {int(retry)}", {"retry_after": int(retry)})
        if self.limits is None or method not in SENDING:
            return
        chat_id = int(params.get("chat_id", 0))
        w = self._windows
        checks: list[tuple[deque[float], float, int]] = [(w.overall, 1.0, self.limits.overall_per_s)]
        if chat_id > 0:
            checks.append((w.chats.setdefault(chat_id, deque()), 1.0, self.limits.chat_per_s))
        elif chat_id < 0:
            checks.append((w.groups.setdefault(chat_id, deque()), 60.0, self.limits.group_per_min))
        for q, span, cap in checks:
            while q and q[0] <= now - span:
                q.popleft()
            if len(q) >= cap:
                self.rejected_429 += 1
                retry = max(1, int(q[0] + span - now + 0.999))
                raise BotAPIError(429, f"Too Many Requests: retry after {retry}", {"retry_after": retry})
        for q, _, _ in checks:
            q.append(now)

    def _message(self, chat_id: int, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
        if chat_id in self.blocked:
            raise BotAPIError(403, "Forbidden: bot was blocked by the user")
        msg_id = self._next_msg(chat_id)
        msg: dict[str, Any] = {"message_id": msg_id, "date": int(time.time()), "chat": self.chat(chat_id),
                               "from": self._me(), **extra}
        if "text" in params:
            msg["text"] = params["text"]
        if params.get("reply_markup"):
            msg["reply_markup"] = params["reply_markup"]
        self.messages[(chat_id, msg_id)] = msg
        return msg

    # ---- methods ---------------------------------------------------------------------------------
    def _m_getMe(self, p: dict[str, Any]) -> Any:
        return self._me()

    async def _m_getUpdates(self, p: dict[str, Any]) -> Any:
        offset = int(p.get("offset") or 0)
        timeout = float(p.get("timeout") or 0)
        limit = int(p.get("limit") or 100)
        async with self._new_update:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
            if not self.updates and timeout > 0:
                try:
                    await asyncio.wait_for(self._new_update.wait(), min(timeout, 2.0))
                except TimeoutError:
                    pass
            return self.updates[:limit]

    def _m_setMyCommands(self, p: dict[str, Any]) -> Any:
        cmds = p.get("commands")
        if not isinstance(cmds, list) or not all(isinstance(c, dict) and c.get("command") for c in cmds):
            raise BotAPIError(400, "Bad Request: commands must be a list of BotCommand")
        return True

    def _m_deleteWebhook(self, p: dict[str, Any]) -> Any:
        self.webhook = None
        return True

    def _m_setWebhook(self, p: dict[str, Any]) -> Any:
        if not str(p.get("url", "")).startswith("https://") and not str(p.get("url", "")).startswith("http://127."):
            raise BotAPIError(400, "Bad Request: bad webhook: HTTPS url must be provided for webhook")
        self.webhook = p
        return True

    def _m_getWebhookInfo(self, p: dict[str, Any]) -> Any:
        return {"url": (self.webhook or {}).get("url", ""), "has_custom_certificate": False,
                "pending_update_count": 0}

    def _m_sendMessage(self, p: dict[str, Any]) -> Any:
        if not str(p.get("text", "")).strip():
            raise BotAPIError(400, "Bad Request: message text is empty")
        return self._message(int(p["chat_id"]), p)

    def _m_sendInvoice(self, p: dict[str, Any]) -> Any:
        prices = p.get("prices")
        if p.get("currency") == "XTR" and (p.get("provider_token") or (isinstance(prices, list) and len(prices) != 1)):
            raise BotAPIError(400, "Bad Request: Stars invoices take one price and no provider token")
        if not isinstance(prices, list) or not prices:
            raise BotAPIError(400, "Bad Request: prices must be non-empty")
        invoice = {"title": p.get("title"), "description": p.get("description"), "currency": p.get("currency"),
                   "total_amount": sum(int(x["amount"]) for x in prices), "start_parameter": ""}
        return self._message(int(p["chat_id"]), {}, invoice=invoice)

    def _edit(self, p: dict[str, Any], *, text: bool) -> Any:
        key = (int(p["chat_id"]), int(p["message_id"]))
        msg = self.messages.get(key)
        if msg is None:
            raise BotAPIError(400, "Bad Request: message to edit not found")
        new_text = p.get("text", msg.get("text")) if text else msg.get("text")
        new_markup = p.get("reply_markup")
        if new_text == msg.get("text") and new_markup == msg.get("reply_markup"):
            raise BotAPIError(400, "Bad Request: message is not modified: specified new message content and "
                                   "reply markup are exactly the same as a current content and reply markup")
        msg["text"] = new_text
        if new_markup:
            msg["reply_markup"] = new_markup
        else:
            msg.pop("reply_markup", None)
        msg["edit_date"] = int(time.time())
        return msg

    def _m_editMessageText(self, p: dict[str, Any]) -> Any:
        return self._edit(p, text=True)

    def _m_editMessageReplyMarkup(self, p: dict[str, Any]) -> Any:
        return self._edit(p, text=False)

    def _m_deleteMessage(self, p: dict[str, Any]) -> Any:
        self.messages.pop((int(p["chat_id"]), int(p["message_id"])), None)
        return True

    def _m_pinChatMessage(self, p: dict[str, Any]) -> Any:
        return True

    def _m_answerCallbackQuery(self, p: dict[str, Any]) -> Any:
        return True

    def _m_answerPreCheckoutQuery(self, p: dict[str, Any]) -> Any:
        if p.get("ok") is False and not p.get("error_message"):
            raise BotAPIError(400, "Bad Request: error_message is required when ok is false")
        return True

    def _m_refundStarPayment(self, p: dict[str, Any]) -> Any:
        charge = self.charges.get(str(p.get("telegram_payment_charge_id")))
        if charge is None or charge["user_id"] != int(p.get("user_id", 0)):
            raise BotAPIError(400, "Bad Request: CHARGE_NOT_FOUND")
        if charge["refunded"]:
            raise BotAPIError(400, "Bad Request: CHARGE_ALREADY_REFUNDED")
        charge["refunded"] = True
        return True

    def _m_createInvoiceLink(self, p: dict[str, Any]) -> Any:
        prices = p.get("prices")
        if not isinstance(prices, list) or not prices:
            raise BotAPIError(400, "Bad Request: prices must be non-empty")
        if p.get("currency") == "XTR" and (p.get("provider_token") or len(prices) != 1):
            raise BotAPIError(400, "Bad Request: Stars invoices take one price and no provider token")
        if len(str(p.get("payload", "")).encode()) > 128 or not p.get("payload"):
            raise BotAPIError(400, "Bad Request: invoice payload must be 1-128 bytes")
        if "subscription_period" in p:
            if int(p["subscription_period"]) != 2592000:
                raise BotAPIError(400, "Bad Request: SUBSCRIPTION_PERIOD_INVALID")
            if p.get("currency") != "XTR" or not 1 <= int(prices[0]["amount"]) <= 10000:
                raise BotAPIError(400, "Bad Request: SUBSCRIPTION_INVALID")
        link = f"https://t.me/$inv{len(self.invoice_links) + 1}"
        self.invoice_links[link] = dict(p)
        return link

    def _m_editUserStarSubscription(self, p: dict[str, Any]) -> Any:
        sub = self.star_subscriptions.get(str(p.get("telegram_payment_charge_id")))
        if sub is None or sub["user_id"] != int(p.get("user_id", 0)):
            raise BotAPIError(400, "Bad Request: CHARGE_ID_INVALID")
        canceled = p.get("is_canceled")
        if not isinstance(canceled, bool):
            raise BotAPIError(400, "Bad Request: is_canceled must be a boolean")
        if sub["canceled"] == canceled:
            raise BotAPIError(400, "Bad Request: SUBSCRIPTION_NOT_MODIFIED")
        sub["canceled"] = canceled
        return True

    def _m_getChatMember(self, p: dict[str, Any]) -> Any:
        chat_id, user_id = int(p["chat_id"]), int(p["user_id"])
        status = "administrator" if user_id in self.admins.get(chat_id, set()) else "member"
        member: dict[str, Any] = {"status": status, "user": self.user(user_id)}
        if status == "administrator":
            member.update({k: True for k in (
                "can_be_edited", "is_anonymous", "can_manage_chat", "can_delete_messages", "can_manage_video_chats",
                "can_restrict_members", "can_promote_members", "can_change_info", "can_invite_users",
                "can_post_stories", "can_edit_stories", "can_delete_stories")})
        return member

    def _m_setChatMenuButton(self, p: dict[str, Any]) -> Any:
        return True

    def _m_close(self, p: dict[str, Any]) -> Any:
        return True
