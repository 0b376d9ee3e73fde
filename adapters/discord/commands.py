"""Slash commands: the /space group (every table command, plus start, schedule, queue, join) and plugin commands.

Each command names its Space and its person the Discord way (the ``space`` option, a member or a
queue position or account id) and runs the table command through the chat toolkit.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, Literal, Optional

import discord
from discord import app_commands

from core.errors import Conflict, NotFound
from core.model.accounts import Actor
from core.model.space import Space
from core.timeparse import parse_when

if TYPE_CHECKING:
    from plugins.api import CommandSpec

from adapters.chat.actions import ChatDesk, person, run
from adapters.chat.wording import markdown, word
from adapters.chat.wording import queue as chat_queue
from adapters.discord import render
from adapters.discord.base import PLATFORM, DiscordBase
from adapters.discord.setup import _topics
from core.command_model import Ports
from core.commands import BUILTIN_TABLE, REACTIONS
from core.errors import Invalid

log = logging.getLogger(__name__)
STYLE = markdown(discord.utils.escape_markdown)
WHO = "Their queue number (#2) or account id: anyone on any platform"
SPACE = "Space id (defaults to the live one here)"
PERSON_REQUIRED = frozenset({"approve", "deny", "invite", "promote", "demote", "remove"})


def _summary(name: str) -> str:
    """The table's words for a command, so Discord describes it as every surface does."""
    command = BUILTIN_TABLE.get(name)
    return (command.summary if command is not None else name)[:100]


class CommandsMixin(DiscordBase):
    def _register(self, tree: app_commands.CommandTree[discord.Client]) -> None:
        space = app_commands.Group(name="space", description="Live audio Spaces")
        me = self

        @space.command(name="start", description="Go live now, or start your scheduled Space")
        @app_commands.describe(title="Title of a new Space", space="Id of your scheduled Space to start",
                               topic="Up to three topics, comma separated")
        async def start(interaction: discord.Interaction, title: str | None = None, space: str | None = None,
                        topic: str | None = None) -> None:
            await me.cmd_start(interaction, title, space, topic)

        @space.command(name="schedule", description="Schedule a Space up to 30 days ahead")
        @app_commands.describe(title="Title", when="When: +2h, in 3d, tomorrow 18:00, 2026-12-01T18:00Z",
                               topic="Up to three topics, comma separated")
        async def schedule(interaction: discord.Interaction, title: str, when: str, topic: str | None = None) -> None:
            await me.cmd_schedule(interaction, title, when, topic)

        @space.command(name="end", description="End your live Space")
        async def end(interaction: discord.Interaction, space: str | None = None) -> None:
            await me._table(interaction, "end", space)

        @space.command(name="cancel", description="Cancel your scheduled Space (ticket holders are refunded)")
        async def cancel(interaction: discord.Interaction, space: str | None = None) -> None:
            await me._table(interaction, "cancel", space, states=("scheduled",))

        @space.command(name="remind", description="Get a DM when a scheduled Space starts")
        async def remind(interaction: discord.Interaction, space: str | None = None, off: bool = False) -> None:
            await me._table(interaction, "remind", space, {"on": not off}, states=("scheduled",), public=False)

        @space.command(name="hand", description="Raise or lower your hand")
        async def hand(interaction: discord.Interaction, space: str | None = None, down: bool = False) -> None:
            await me._table(interaction, "hand", space, {"up": False} if down else {}, public=False)

        @space.command(name="react", description="Send a reaction")
        @app_commands.describe(emoji="One emoji: " + " ".join(REACTIONS))
        async def react(interaction: discord.Interaction, emoji: str, space: str | None = None) -> None:
            await me._table(interaction, "react", space, {"emoji": emoji}, public=False)

        @space.command(name="queue", description="Who has a hand up")
        async def queue(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, actor=actor)
            view = await me.core.view(s.id)
            hands = [(h.account_id, view.names.get(h.account_id, h.account_id)) for h in view.space.hands]
            await me._reply(interaction, chat_queue(hands, STYLE, approve="`/space approve who:NUMBER`"))

        def person_command(name: str, description: str, states: tuple[str, ...] = ("live",)) -> None:
            @space.command(name=name, description=description)
            @app_commands.describe(member="Who, if they are in this server", who=WHO, space=SPACE)
            async def command(interaction: discord.Interaction, member: discord.Member | None = None,
                              who: str | None = None, space: str | None = None) -> None:
                await me._table(interaction, name, space, states=states, member=member, who=who)

        for name in ("approve", "deny", "invite", "demote", "mute", "unmute"):
            person_command(name, _summary(name))

        @space.command(name="promote", description=_summary("promote"))
        @app_commands.describe(member="Who, if they are in this server", who=WHO, role="speaker or co-host",
                               space=SPACE)
        async def promote(interaction: discord.Interaction, member: discord.Member | None = None,
                          who: str | None = None, role: Literal["speaker", "cohost"] = "speaker",
                          space: str | None = None) -> None:
            await me._table(interaction, "promote", space, {"role": role}, member=member, who=who)

        @space.command(name="remove", description="Remove someone from the Space (host, co-host)")
        @app_commands.describe(member="Who, if they are in this server", who=WHO,
                               block="Also keep them out of this host's Spaces", reason="Why (kept in the log)")
        async def remove(interaction: discord.Interaction, member: discord.Member | None = None,
                         who: str | None = None, block: bool = False, reason: str = "",
                         space: str | None = None) -> None:
            await me._table(interaction, "remove", space, {"block": block, "reason": reason}, member=member, who=who)

        def follow_command(name: str) -> None:  # top level: about a host, not a Space (and /space holds 25 at most)
            @tree.command(name=name, description=_summary(name))
            @app_commands.describe(member="The host, if they are in this server",
                                   who="The host's account id (left out: this Space's host)", space=SPACE)
            async def command(interaction: discord.Interaction, member: discord.Member | None = None,
                              who: str | None = None, space: str | None = None) -> None:
                await me._follow(interaction, name, member, who, space)

        follow_command("follow")
        follow_command("unfollow")

        @space.command(name="pin", description="Pin a link to the Space (people on stage)")
        async def pin(interaction: discord.Interaction, url: str, title: str | None = None,
                      space: str | None = None) -> None:
            await me._table(interaction, "pin", space, {"title": title or url, "url": url})

        @space.command(name="unpin", description="Unpin by number (1 is the first pin on the card)")
        async def unpin(interaction: discord.Interaction, number: app_commands.Range[int, 1, 50],
                        space: str | None = None) -> None:
            await me._table(interaction, "unpin", space, {"pin_number": number})

        @space.command(name="captions", description="Captions on or off (people on stage)")
        async def captions(interaction: discord.Interaction, on: bool, space: str | None = None) -> None:
            await me._table(interaction, "captions", space, {"enabled": on})

        @space.command(name="share", description="Share a Space here")
        async def share(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, states=("live", "scheduled"), actor=actor)
            payload = await me.core.share(s.id, {"web": f"{me.public_url}/s/{s.id}"})
            content = render.card(await me.core.view(s.id), f"{me.public_url}/s/{s.id}")
            kwargs: dict[str, Any] = {"embed": content.embed}
            if content.view is not None:
                kwargs["view"] = content.view
            await me._reply(interaction, payload.text(), ephemeral=False, **kwargs)

        @space.command(name="ticket", description="Buy a ticket to a ticketed Space")
        async def ticket(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, states=("live", "scheduled"), actor=actor)
            await me.cmd_ticket(interaction, actor, s)

        @space.command(name="refund", description=_summary("refund"))
        async def refund(interaction: discord.Interaction, space: str | None = None) -> None:
            await me._table(interaction, "refund", space, states=("scheduled", "live"), public=False)

        @space.command(name="join", description="Your personal link to the web room (to speak from the browser)")
        async def join(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, actor=actor)
            await me._send_room(interaction, actor, s.id)

        @space.command(name="link", description="Link your account across Discord, Telegram and the web")
        @app_commands.describe(code="A code from another platform; leave empty to get one")
        async def link(interaction: discord.Interaction, code: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            out = await run(me.core, actor, "link", None, {"code": code.strip()} if code else {})
            name = (await me.core.account(str(out.data["account_id"]))).display_name if code else ""
            await me._reply(interaction, word(out, STYLE, name=name))

        tree.add_command(space)

    async def _table(self, interaction: discord.Interaction, command: str, space_id: str | None,
                     args: dict[str, Any] | None = None, *, states: tuple[str, ...] = ("live",), public: bool = True,
                     member: discord.Member | None = None, who: str | None = None) -> None:
        """Run a table command for the caller on the Space they mean, and answer in the shared words."""
        actor = await self._actor(interaction.user)
        s = await self._space(interaction, space_id, states=states, actor=actor)
        args = dict(args or {})
        name = ""
        if member is not None or who:
            if member is not None:
                args["person"], name = await self._account(member), member.display_name
            else:
                args["person"] = await person(self.core, s, who or "")
                name = (await self.core.account(args["person"])).display_name
        elif command in PERSON_REQUIRED:
            raise Invalid("chat.who")
        if "pin_number" in args:
            n = args.pop("pin_number")
            if n > len(s.pins):
                raise NotFound("pin.not_found", pin_id=str(n))
            args["pin_id"] = s.pins[n - 1].id
        out = await run(self.core, actor, command, s, args, ports=Ports(tickets=ChatDesk(self.ledger)))
        text = word(out, STYLE, name=name, title=s.title, pin_title=str(args.get("title", "")),
                    ticketed=s.ticketing is not None)
        await self._reply(interaction, text, ephemeral=not public)

    async def _follow(self, interaction: discord.Interaction, command: str, member: discord.Member | None,
                      who: str | None, space_id: str | None) -> None:
        actor = await self._actor(interaction.user)
        if member is not None:
            host = await self._account(member)
        elif who:
            host = await person(self.core, None, who)
        else:
            host = (await self._space(interaction, space_id, states=("live", "scheduled"), actor=actor)).host_id
        out = await run(self.core, actor, command, None, {"host": host})
        await self._reply(interaction, word(out, STYLE, name=(await self.core.account(host)).display_name))


    def _plugin_command(self, spec: CommandSpec) -> app_commands.Command[Any, Any, None]:
        """A plugin's command as a top-level app command; its options become typed Discord options."""
        kinds: dict[str, Any] = {"text": str, "number": int, "flag": bool, "member": discord.Member}
        P = inspect.Parameter
        params = [P("interaction", P.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction)]
        described = {"space": "Id of the Space (default: the one live here)"}
        for o in sorted(spec.options, key=lambda o: not o.required):
            kind = Literal.__getitem__(o.choices) if o.kind == "text" and o.choices else kinds[o.kind]
            params.append(P(o.name, P.POSITIONAL_OR_KEYWORD, annotation=kind if o.required else Optional[kind],  # noqa: UP045
                            default=P.empty if o.required else None))
            described[o.name] = o.description[:100] or o.name
        params.append(P("space", P.POSITIONAL_OR_KEYWORD, annotation=Optional[str], default=None))  # noqa: UP045
        me = self

        async def callback(interaction: discord.Interaction, /, **values: Any) -> None:
            await me.cmd_plugin(interaction, spec, values)

        callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        callback.__discord_app_commands_param_description__ = described  # type: ignore[attr-defined]
        return app_commands.Command(name=spec.name, description=spec.description or spec.name, callback=callback)

    async def cmd_plugin(self, interaction: discord.Interaction, spec: CommandSpec, values: dict[str, Any]) -> None:
        assert self.plugins is not None
        actor = await self._actor(interaction.user)
        space = await self._space(interaction, values.pop("space", None), states=("live", "scheduled"), actor=actor)
        args: dict[str, Any] = {}
        for k, v in values.items():
            if v is None:
                continue
            args[k] = await self._account(v) if isinstance(v, discord.abc.User) else v
        reply = await self.plugins.invoke(spec.name, actor, space.id, args, PLATFORM)
        await self._reply(interaction, reply.text + (f"\n{reply.url}" if reply.url else ""), ephemeral=True)

    async def cmd_start(self, interaction: discord.Interaction, title: str | None, space_id: str | None,
                        topic: str | None) -> None:
        actor = await self._actor(interaction.user)
        if interaction.guild is not None:
            await self._preflight(interaction.guild, scheduled=False)
        if space_id or not title:
            s = await self._space(interaction, space_id, states=("scheduled",), actor=actor)
            s = await self.core.start_space(actor, s.id)
        else:
            community = await self._community(interaction.guild) if interaction.guild else None
            s = await self.core.create_space(actor, title, topics=_topics(topic),
                                             community_id=community.id if community else None)
        await self._reply(interaction, f"🔴 **{s.title}** is live (`{s.id}`). Followers are being told.",
                          ephemeral=False)
        await self._send_room(interaction, actor, s.id, note="Speak from the web room (Discord voice only plays "
                                                             "the Space here):")

    async def cmd_schedule(self, interaction: discord.Interaction, title: str, when: str, topic: str | None) -> None:
        actor = await self._actor(interaction.user)
        start_at = parse_when(when, self.core.now())
        if interaction.guild is not None:
            await self._preflight(interaction.guild, scheduled=True)
        community = await self._community(interaction.guild) if interaction.guild else None
        s = await self.core.create_space(actor, title, start_at=start_at, topics=_topics(topic),
                                         community_id=community.id if community else None)
        await self._reply(interaction, f"🗓 **{s.title}** scheduled for {render.when(s.scheduled_for)} (`{s.id}`).",
                          ephemeral=False)

    async def cmd_ticket(self, interaction: discord.Interaction, actor: Actor, s: Space) -> None:
        t = s.ticketing
        if t is None:
            raise Conflict("ticket.not_ticketed", space_id=s.id)
        if t.currency.upper() == "XTR":
            raise Conflict("discord.stars_only")
        if self.stripe_sales is None:
            raise Conflict("billing.off", hint="this Space is priced in " + t.currency.upper())
        purchase = await self.stripe_sales.buy_with_checkout(actor, s.id, s.title)
        view = discord.ui.View(timeout=None)
        view.add_item(discord.ui.Button(label="Pay", emoji="🎟", url=purchase.url))
        minutes = int(self.ledger.checkout_hold_for.total_seconds() // 60)  # a Checkout hold, not a card hold
        await self._reply(interaction, f"🎟 Pay for **{s.title}** here; the seat is yours for {minutes} min.",
                          view=view)
