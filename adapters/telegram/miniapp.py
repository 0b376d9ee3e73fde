"""The room on Telegram: a Mini App (the web room, signed in with Telegram's ``initData``) and the
personal room link sent by /start join_ID. Both join through ``adapters.chat.actions.room_token``,
the one way both chat bots hand out the web room."""

from __future__ import annotations

from html import escape

from aiohttp import web
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, WebAppInfo

from adapters.chat.actions import room_token
from adapters.telegram import render
from adapters.telegram.base import PLATFORM, TelegramBase, say
from adapters.telegram.webapp import validate_init_data
from core.errors import DomainError, Forbidden, Invalid
from core.model.accounts import Actor
from core.model.space import SpaceState


class MiniAppMixin(TelegramBase):
    async def _send_room(self, msg: Message, actor: Actor, space_id: str) -> None:
        view = await self.core.view(space_id)
        s = view.space
        if s.state != SpaceState.LIVE:
            text, _ = render.card(view, self.username)
            await self._reply(msg, text + "\n\nIt is not live yet; tap Remind me on its card or send "
                                          f"/remind {s.id}.")
            return
        try:
            token = await room_token(self.core, self.tokens, actor.account_id, s.id)
        except Forbidden as e:
            if not e.code.startswith("subscription.") or s.subscribers is None:
                raise
            await self._reply(msg, f"⚠️ {escape(say(e), quote=False)}\nSubscribe in Stars with /subscribe {s.id}.")
            return
        app_url = f"{self.public_url}/tg/app?space={s.id}"
        rows = [[InlineKeyboardButton("🎧 Open the room", web_app=WebAppInfo(app_url))],
                [InlineKeyboardButton("Open in the browser", url=f"{self.public_url}/s/{s.id}#t={token}")]]
        await self._reply(msg, f"🔴 <b>{escape(s.title)}</b> with {escape(view.host_name)}",
                          markup=InlineKeyboardMarkup(rows))

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
            token = await room_token(self.core, self.tokens, account.id, space_id)
            view = await self.core.view(space_id)
        except DomainError as e:
            status = {"forbidden": 403, "not_found": 404, "conflict": 409}.get(e.kind, 400)
            return web.json_response({"error": {**e.as_dict(), "message": say(e)}}, status=status)
        return web.json_response({"url": f"/s/{space_id}#t={token}", "token": token, "account_id": account.id,
                                  "title": view.space.title})
