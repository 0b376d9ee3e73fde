"""Telegram commands: every table command (``core.commands``) by its own name, plus Telegram's own
(start, help, spaces, space new/start, queue, ticket in Stars) and plugin commands.

A table command's options are read from the words after it, by the table's option kinds: a flag
from on/off (up/down, or the option's name: ``block``), a choice from its values, a person from a
reply, an @mention of someone the bot knows, a queue number or an account id, and text from the
rest. The table decides (state, least role, arguments) and ``adapters.chat`` words the answer, so
the menu, /help and the replies follow the table.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any

from telegram import Update
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import TelegramError
from telegram.ext import CommandHandler, ContextTypes

from adapters.chat.actions import ChatDesk, run
from adapters.chat.wording import HTML, word
from adapters.chat.wording import queue as chat_queue
from adapters.telegram import render
from adapters.telegram.base import PLATFORM, TelegramBase, is_space_id, say
from core.command_model import Ports
from core.commands import ALIASES, BUILTIN_TABLE, Command, CommandTable
from core.errors import DomainError, Invalid, NotFound
from core.model.accounts import Actor
from core.model.space import Space, SpaceState
from core.services import SharePayload
from core.timeparse import parse_when
from core.web_login import NAMESPACE as LOGIN_NS
from core.web_login import LoginCodes

if TYPE_CHECKING:
    from plugins.api import CommandSpec

log = logging.getLogger(__name__)

Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE, Actor, list[str]], Awaitable[None]]

OWN_COMMANDS: list[tuple[str, str]] = [
    ("start", "Start the bot (get alerts by DM)"),
    ("help", "What I can do"),
    ("spaces", "Live and upcoming Spaces here"),
    ("space", 'new "title" [when] · start ID — host a Space'),
    ("queue", "Who has a hand up"),
    ("subscribe", "TIER or SPACE — subscribe to a creator in Stars"),
    ("unsubscribe", "[ID] — your subscriptions; stop one renewing"),
    ("tiers", "Your subscription tiers (creators, in private chat)"),
    ("tier_create", "NAME PRICE CURRENCY [PERKS] — sell a new tier"),
    ("tier_archive", "TIER — take a tier off sale"),
    ("tier_stars", "TIER STARS|off — sell a tier in Telegram Stars"),
]
SKIPPED = frozenset({"start"})  # the table's start is /space start here (Telegram's /start opens the bot)
OWN_HANDLERS = frozenset({"ticket"})  # sold in Stars (or Stripe Checkout) by the payments unit
TRUE_WORDS = frozenset({"on", "up", "yes", "true"})
FALSE_WORDS = frozenset({"off", "down", "lower", "no", "false"})
# Nobody speaks from a Telegram chat: /mute with no one named mutes you only if you are on stage
# (from the web room); otherwise it asks who
PERSON_REQUIRED = frozenset({"mute", "unmute"})
USAGE = {
    "pin": "/pin URL [title], or reply to a message with /pin [title]",
    "unpin": "/unpin NUMBER (1 is the first pin on the card)",
    "captions": "/captions on|off",
    "react": "/react EMOJI, e.g. /react 👏",
}


def table_commands(table: CommandTable = BUILTIN_TABLE) -> list[Command]:
    """The table's entries with a /command of their own (plugins' answer through ``on_unknown``)."""
    return [c for c in table if c.name not in SKIPPED and c.plugin is None]


def usage(command: Command) -> str:
    """How to type a table command here, from its options: ``/promote WHO [speaker|cohost]``."""
    if command.name in USAGE:
        return USAGE[command.name]
    words = []
    for o in command.options:
        w = {"person": "WHO", "choice": "|".join(o.choices or ()), "emoji": "EMOJI", "when": "WHEN",
             "flag": "up|down" if o.name == "up" else "on|off" if o.name in ("on", "enabled") else o.name,
             }.get(o.kind, o.name.upper())
        words.append(w if o.required else f"[{w}]")
    return " ".join([f"/{command.name}", *words])


def menu(table: CommandTable = BUILTIN_TABLE) -> list[tuple[str, str]]:
    """The bot menu (setMyCommands), from the table."""
    return OWN_COMMANDS + [(c.name, c.summary[:256]) for c in table_commands(table)]


def help_text(table: CommandTable = BUILTIN_TABLE) -> str:
    """/help, from the table."""
    return "\n".join([*(f"/{c} — {d}" for c, d in OWN_COMMANDS),
                      *(f"{usage(c)} — {c.summary}" for c in table_commands(table))])


# the core's built-ins alone (names plugins may not take: spacebridge.app.reserved_command_names)
COMMANDS: list[tuple[str, str]] = menu()
HELP = help_text()


def share_text(shared: Any) -> str:
    """The table's share result in the core's words."""
    starts = shared.get("starts_at")
    return SharePayload(str(shared["space_id"]), str(shared["title"]), str(shared["host_name"]), str(shared["state"]),
                        datetime.fromisoformat(starts) if starts else None, dict(shared["links"])).text()


def _space_states(command: Command) -> tuple[str, ...]:
    """Where to look for the Space a chat means: live first, scheduled where the command applies."""
    return tuple(s for s in ("live", "scheduled") if s in command.states) or ("live",)


class CommandsMixin(TelegramBase):
    @property
    def table(self) -> CommandTable:
        """The instance's one command table (the plugin manager holds it), read where every surface reads it."""
        return self.plugins.table if self.plugins is not None else BUILTIN_TABLE

    @property
    def help(self) -> str:
        return help_text(self.table)

    def _register_commands(self) -> None:
        own: dict[str, Handler] = {
            "start": self.cmd_start, "help": self.cmd_help, "spaces": self.cmd_spaces, "space": self.cmd_space,
            "queue": self.cmd_queue, "ticket": self.cmd_ticket, "subscribe": self.cmd_subscribe,
            "unsubscribe": self.cmd_unsubscribe, "tiers": self.cmd_tiers, "tier_create": self.cmd_tier_create,
            "tier_archive": self.cmd_tier_archive, "tier_stars": self.cmd_tier_stars,
        }
        for name, fn in own.items():
            self.app.add_handler(CommandHandler(name, self._wrap(fn)))
        for command in table_commands(self.table):
            if command.name not in OWN_HANDLERS:
                self.app.add_handler(CommandHandler(command.name, self._wrap(self._table_handler(command))))
        for alias, (target, implied) in ALIASES.items():  # old names people were told (/muteall), off the menu
            if not implied and target not in OWN_HANDLERS | SKIPPED:
                self.app.add_handler(CommandHandler(alias, self._wrap(self._table_handler(self.table.resolve(
                    target)[0]))))

    def _wrap(self, fn: Handler) -> Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]:
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

    def _table_handler(self, command: Command) -> Handler:
        async def handler(update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, words: list[str]) -> None:
            await self.cmd_table(update, actor, command, words)

        return handler

    async def cmd_table(self, update: Update, actor: Actor, command: Command, words: list[str]) -> None:
        """Any table command: its Space, its options from the words, the table's decision, the shared words."""
        msg = update.effective_message
        assert msg is not None
        if command.name == "mute" and words and words[0].lower() == "off":  # /mute off WHO: lift a mute
            words, command = words[1:], self.table.resolve("unmute")[0]
        space: Space | None = None
        if command.scope == "account":
            space = await self._account_space(update, actor, command, words)
        else:
            space = await self._space(update, words, command.name, states=_space_states(command), actor=actor)
        args, name = await self._options(update, command, words, space, actor)
        links = {"telegram": render.join_link(self.username, space.id), "web": f"{self.public_url}/s/{space.id}"} \
            if space is not None else {}
        out = await run(self.core, actor, command.name, space, args, table=self.table, text=True,
                        ports=Ports(tickets=ChatDesk(self.ledger), links=lambda _: links))
        if out.code == "space.shared" and space is not None:
            await self._reply(msg, share_text(out.result), html=False)
            await self._post_card(msg.chat.id, space.id)
            return
        named = out.data.get("account_id") or out.data.get("host_id")
        if not name and named:
            name = (await self.core.account(str(named))).display_name
        await self._reply(msg, word(out, HTML, name=escape(name), title=space.title if space else "",
                                    pin_title=escape(str(args.get("title", ""))),
                                    ticketed=space is not None and space.ticketing is not None))

    async def _account_space(self, update: Update, actor: Actor, command: Command, words: list[str]) -> Space | None:
        """An account command (follow, link) needs a Space only to name a host when none is named."""
        if command.name == "link":
            return None
        for i, w in enumerate(words):  # /follow SPACE_ID: that Space's host
            if is_space_id(w):
                with contextlib.suppress(NotFound):
                    space = (await self.core.view(w)).space
                    del words[i]
                    return space
        named = await self._replied_to(update) is not None or any(not w.lstrip("#").isdigit() for w in words)
        return None if named else await self._space(update, words, command.name, states=("live", "scheduled"),
                                                     actor=actor)

    async def _options(self, update: Update, command: Command, words: list[str], space: Space | None,
                       actor: Actor) -> tuple[dict[str, Any], str]:
        """The table command's arguments from the message, and the display name of the person it names."""
        msg = update.effective_message
        assert msg is not None
        args: dict[str, Any] = {}
        name = ""
        rest = list(words)
        for o in command.options:  # flags and choices may stand anywhere
            if o.kind == "flag":
                hit = next((w for w in rest if w.lower() in TRUE_WORDS | FALSE_WORDS | {o.name}), None)
                if hit is not None:
                    rest.remove(hit)
                    args[o.name] = hit.lower() not in FALSE_WORDS
            elif o.kind == "choice":
                norm = {w: w.lower().replace("-", "") for w in rest}
                hit = next((w for w in rest if norm[w] in o.choices), None)
                if hit is not None:
                    rest.remove(hit)
                    args[o.name] = norm[hit]
        if command.name == "pin":
            return self._pin_args(update, rest), ""
        texts = [o for o in command.options if o.kind in ("text", "when")]
        on_stage = space is not None and space.role_of(actor.account_id) is not None
        for o in command.options:  # the rest in the table's order; a choice not found is checked as given
            if o.kind == "flag" or o.name in args:
                continue
            if o.kind == "person":
                named = rest or await self._replied_to(update) is not None
                if named:
                    args[o.name] = await self._who(update, rest, space)
                    name = (await self.core.account(args[o.name])).display_name
                elif o.required or (command.name in PERSON_REQUIRED and not on_stage):
                    raise Invalid("chat.who")
                continue
            if not rest:
                if o.required:
                    raise Invalid("telegram.usage", usage=usage(command))
                continue
            if o.kind in ("text", "when") and o is texts[-1]:
                args[o.name], rest = " ".join(rest), []
            else:
                args[o.name] = rest.pop(0)
        for o in command.options:  # a word left over is the value of a flag not yet given ("/hand maybe": refused)
            if rest and o.kind == "flag" and o.name not in args:
                args[o.name] = rest.pop(0)
        if command.name == "unpin" and space is not None:
            pid = str(args["pin_id"])
            if pid.isdigit() and 1 <= int(pid) <= len(space.pins):
                args["pin_id"] = space.pins[int(pid) - 1].id
        for o in command.options:
            if o.required and o.name not in args:
                raise Invalid("telegram.usage", usage=usage(command))
        return args, name

    @staticmethod
    def _pin_args(update: Update, rest: list[str]) -> dict[str, Any]:
        """``/pin URL [title]``, or a reply to the message to pin with ``/pin [title]``."""
        msg = update.effective_message
        assert msg is not None
        if msg.reply_to_message is not None:
            r = msg.reply_to_message
            return {"title": (" ".join(rest) or (r.text or r.caption or "Pinned message"))[:80],
                    "message_ref": r.link or f"telegram:{r.chat.id}:{r.message_id}"}
        if not rest:
            raise Invalid("telegram.usage", usage=USAGE["pin"])
        return {"url": rest[0], "title": " ".join(rest[1:]) or rest[0]}

    # ---- Telegram's own ------------------------------------------------------------------------
    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram update failed: %s", context.error, exc_info=context.error)
        if isinstance(update, Update) and update.effective_message is not None:
            with contextlib.suppress(TelegramError):
                await update.effective_message.reply_text("Something went wrong on our side; please try again.")

    def _plugin_commands(self) -> list[CommandSpec]:
        return self.plugins.command_list() if self.plugins is not None else []

    async def on_unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Commands with no handler of their own: a plugin's (registered at start), or a helpful list."""
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
        await self._reply(msg, f"I don't know {cmd.split('@')[0]}. Here is what I can do:\n{self.help}{extra}",
                          html=False)

    async def cmd_plugin(self, update: Update, actor: Actor, spec: CommandSpec, args: list[str]) -> None:
        """A plugin command: words after it fill its options in order (a member: reply, mention, queue number
        or id); the plugin manager checks them in its own words, as on Discord."""
        assert self.plugins is not None and update.effective_message is not None
        space = await self._space(update, args, spec.name, actor=actor, states=("live", "scheduled"))
        values: dict[str, Any] = {}
        texts = [o for o in spec.options if o.kind == "text"]
        for o in spec.options:
            if o.kind == "member":
                if args or await self._replied_to(update) is not None:
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

    async def cmd_start(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        user = update.effective_user
        assert msg is not None and user is not None
        if msg.chat.type != ChatType.PRIVATE:
            await self._reply(msg, self.help, html=False)
            return
        await self.core.set_dm_opt_in(actor, PLATFORM, str(user.id), True)
        await self.core.set_reachable(PLATFORM, str(user.id), True)
        payload = args[0] if args else ""
        if payload.startswith("join_"):
            await self._send_room(msg, actor, payload[5:])
            return
        if payload.startswith("login_"):  # "Sign in with Telegram" on the web (core/web_login.py)
            codes = LoginCodes(self.core.store.kv(LOGIN_NS), self.core.clock)
            try:
                await codes.confirm(payload[6:], PLATFORM, str(user.id), user.full_name or user.username or "")
            except Invalid:
                await self._reply(msg, "That sign-in code has expired or was used already. Ask the sign-in page "
                                       "for a new one (codes last 5 minutes).", html=False)
                return
            await self._reply(msg, "✅ Confirmed. Go back to your browser: it signs you in as this Telegram "
                                   "account. If you did not ask to sign in, ignore this.", html=False)
            return
        if payload.startswith("link_"):
            account = await self.core.redeem_link_code(actor, payload[5:])
            await self._reply(msg, f"✅ Linked: this Telegram account is now part of {account.display_name}'s account.",
                              html=False)
            return
        await self._reply(msg, "👋 Welcome to Spacebridge. You'll get a DM when hosts you follow go live.\n\n"
                          + self.help, html=False)

    async def cmd_help(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        assert update.effective_message is not None
        extra = "".join(f"\n/{c.name} — {c.description}" for c in self._plugin_commands())
        await self._reply(update.effective_message, self.help + extra, html=False)

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
        use = '/space new "title" [when: +2h, in 3d, 2026-12-01T18:00Z] · /space start ID'
        rest = msg.text.split(None, 1)[1] if len(msg.text.split(None, 1)) > 1 else ""
        try:
            parts = shlex.split(rest)
        except ValueError:
            raise Invalid("telegram.usage", usage=use) from None
        if not parts or parts[0] not in ("new", "start"):
            raise Invalid("telegram.usage", usage=use)
        if parts[0] == "start":  # the table's start
            space = await self._space(update, parts[1:], "space start", states=("scheduled",), actor=actor)
            out = await run(self.core, actor, "start", space)
            await self._reply(msg, word(out, HTML, title=space.title))
            return
        if len(parts) < 2:
            raise Invalid("telegram.usage", usage=use)
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

    async def cmd_queue(self, update: Update, ctx: ContextTypes.DEFAULT_TYPE, actor: Actor, args: list[str]) -> None:
        msg = update.effective_message
        assert msg is not None
        space = await self._space(update, args, "queue", actor=actor)
        view = await self.core.view(space.id)
        hands = [(h.account_id, view.names.get(h.account_id, h.account_id)) for h in view.space.hands]
        await self._reply(msg, chat_queue(hands, HTML, approve="/approve NUMBER", subscribers=view.subscribers))
