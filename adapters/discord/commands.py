"""Slash commands, generated from the command table: ``/space``, ``/stage`` and top-level commands
(``adapters/discord/layout.py`` says which goes where), plus plugin commands.

Each table command's options become typed Discord options (a person is a ``member`` picker or a
``who``: queue position or account id); a few commands keep a Discord shape of their own (start
creates or starts, share posts the card, ticket opens Checkout, pin takes a url, unpin a number).
Every one resolves its Space, applies the table's state and role checks first (as every surface
does), then runs the table command through the chat toolkit and answers in the shared words.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, Literal, Optional

import discord
from discord import app_commands

from adapters.chat.actions import ChatDesk, person, run
from adapters.chat.wording import markdown, word
from adapters.chat.wording import queue as chat_queue
from adapters.discord import render
from adapters.discord.base import PLATFORM, DiscordBase
from adapters.discord.layout import FLAG_NAMES, GROUPS, OWN, group_of
from adapters.discord.setup import _topics
from adapters.discord.tiers import tier_commands
from billing.stars_subscriptions import StarsSubscriptions
from billing.subscriptions import SubscriptionSales
from core.command_model import MAX_ID, Command, Option, Ports
from core.commands import BUILTIN_TABLE, CommandTable, check_role, check_state, role_in
from core.errors import Conflict, Invalid, NotFound
from core.model.accounts import Actor
from core.model.space import Space
from core.timeparse import parse_when

if TYPE_CHECKING:
    from plugins.api import CommandSpec

log = logging.getLogger(__name__)
STYLE = markdown(discord.utils.escape_markdown)
WHO = "Their queue number (#2) or account id: anyone on any platform"
MEMBER = "Who, if they are in this server"
SPACE = "Space id (defaults to the live one here)"
_TYPES: dict[str, Any] = {"text": str, "number": int, "flag": bool, "emoji": str, "when": str}
_P = inspect.Parameter


def _param(name: str, kind: Any, required: bool) -> inspect.Parameter:
    return _P(name, _P.POSITIONAL_OR_KEYWORD, annotation=kind if required else Optional[kind],  # noqa: UP045
              default=_P.empty if required else None)


def _described(o: Option) -> str:
    text = f"{o.description}: {' '.join(o.choices)}" if o.kind == "emoji" and o.choices else o.description
    return text[:100] or o.name


def _entry(name: str) -> Command:
    command = BUILTIN_TABLE.get(name)
    if command is None:
        raise RuntimeError(f"the command table has no {name!r}")
    return command


def _pick_states(command: Command) -> tuple[str, ...]:
    """Where to look for the Space a command means when none is named: live first, scheduled if it may."""
    return tuple(s for s in ("live", "scheduled") if s in command.states) or ("live",)


def _needs_space(command: Command) -> bool:
    """An account command (link) takes no ``space``; follow does, to name that Space's host."""
    return command.scope == "space" or any(o.kind == "person" for o in command.options)


class CommandsMixin(DiscordBase):
    @property
    def table(self) -> CommandTable:
        """The instance's one command table (the plugin manager holds it), read where every surface reads it."""
        return self.plugins.table if self.plugins is not None else BUILTIN_TABLE

    def _register(self, tree: app_commands.CommandTree[discord.Client]) -> None:
        """Every table command where the layout puts it (generated, or Discord's own shape), then Discord's own.

        Plugin entries are left to ``_plugin_command``, which gives them their own (member-picking) shape."""
        groups = {name: app_commands.Group(name=name, description=text) for name, text in GROUPS.items()}
        own = self._own_commands()
        for command in (c for c in self.table if c.plugin is None):
            built = own.pop(command.name, None) or self._table_command(command)
            place = group_of(command)
            if place is None:
                tree.add_command(built)
            else:
                groups[place].add_command(built)
        for name, place in OWN.items():
            groups[place].add_command(own.pop(name))
        if own:
            raise RuntimeError(f"Discord shapes for commands the table does not have: {sorted(own)}")
        for group in groups.values():
            tree.add_command(group)

    def _table_command(self, command: Command) -> app_commands.Command[Any, Any, None]:
        """A table command as an app command: its options typed (a person: ``member`` or ``who``), plus ``space``."""
        params = [_P("interaction", _P.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction)]
        described: dict[str, str] = {}
        table_names: dict[str, tuple[str, bool]] = {}  # Discord's option name -> (the table's, inverted)
        for o in sorted(command.options, key=lambda o: not (o.required and o.kind != "person")):
            if o.kind == "person":  # Discord's member picker, or any platform's person by number or id
                params += [_param("member", discord.Member, False), _param("who", str, False)]
                described["member"] = MEMBER if o.name == "person" else "The same, picked from this server's members"
                described["who"] = WHO if o.name == "person" else _described(o)
                continue
            name, inverted = FLAG_NAMES.get((command.name, o.name), (o.name, False))
            table_names[name] = (o.name, inverted)
            kind = Literal.__getitem__(o.choices) if o.kind == "choice" else _TYPES[o.kind]
            params.append(_param(name, kind, o.required and not inverted))
            described[name] = _described(o)
        if _needs_space(command):
            params.append(_param("space", str, False))
            described["space"] = SPACE
        me = self

        async def callback(interaction: discord.Interaction, /, **values: Any) -> None:
            space_id, member, who = values.pop("space", None), values.pop("member", None), values.pop("who", None)
            args: dict[str, Any] = {}
            for key, value in values.items():
                if value is not None:
                    table_name, inverted = table_names[key]
                    args[table_name] = not value if inverted else value
            await me._table(interaction, command, space_id, args, member=member, who=who)

        callback.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        callback.__discord_app_commands_param_description__ = described  # type: ignore[attr-defined]
        return app_commands.Command(name=command.name, description=command.summary[:100], callback=callback)

    def _own_commands(self) -> dict[str, app_commands.Command[Any, Any, None]]:
        """Commands with a Discord shape of their own: table commands (by table name) and Discord's own."""
        me = self

        @app_commands.command(name="start", description="Go live now, or start your scheduled Space")
        @app_commands.describe(title="Title of a new Space", space="Id of your scheduled Space to start",
                               topic="Up to three topics, comma separated")
        async def start(interaction: discord.Interaction, title: str | None = None, space: str | None = None,
                        topic: str | None = None) -> None:
            await me.cmd_start(interaction, title, space, topic)

        @app_commands.command(name="schedule", description="Schedule a Space up to 30 days ahead")
        @app_commands.describe(title="Title", when="When: +2h, in 3d, tomorrow 18:00, 2026-12-01T18:00Z",
                               topic="Up to three topics, comma separated")
        async def schedule(interaction: discord.Interaction, title: str, when: str, topic: str | None = None) -> None:
            await me.cmd_schedule(interaction, title, when, topic)

        @app_commands.command(name="queue", description="Who has a hand up, numbered as every platform names them")
        @app_commands.describe(space=SPACE)
        async def queue(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, actor=actor)
            view = await me.core.view(s.id)
            hands = [(h.account_id, view.names.get(h.account_id, h.account_id)) for h in view.space.hands]
            await me._reply(interaction, chat_queue(hands, STYLE, approve="`/stage approve who:NUMBER`",
                                                     subscribers=view.subscribers))

        @app_commands.command(name="pin", description=_entry("pin").summary[:100])
        @app_commands.describe(url="A link", title="What to show (default: the link)", space=SPACE)
        async def pin(interaction: discord.Interaction, url: str, title: str | None = None,
                      space: str | None = None) -> None:
            await me._table(interaction, _entry("pin"), space, {"title": title or url, "url": url})

        @app_commands.command(name="unpin", description=_entry("unpin").summary[:100])
        @app_commands.describe(number="Which pin: 1 is the first on the card", space=SPACE)
        async def unpin(interaction: discord.Interaction, number: app_commands.Range[int, 1, 50],
                        space: str | None = None) -> None:
            await me._table(interaction, _entry("unpin"), space, {"pin_number": number})

        @app_commands.command(name="share", description=_entry("share").summary[:100])
        @app_commands.describe(space=SPACE)
        async def share(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._checked(interaction, _entry("share"), space, actor)
            payload = await me.core.share(s.id, {"web": f"{me.public_url}/s/{s.id}"})
            content = render.card(await me.core.view(s.id), f"{me.public_url}/s/{s.id}")
            kwargs: dict[str, Any] = {"embed": content.embed}
            if content.view is not None:
                kwargs["view"] = content.view
            await me._reply(interaction, payload.text(), ephemeral=False, **kwargs)

        @app_commands.command(name="ticket", description=_entry("ticket").summary[:100])
        @app_commands.describe(space=SPACE)
        async def ticket(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            await me.cmd_ticket(interaction, actor, await me._checked(interaction, _entry("ticket"), space,
                                                                      actor))

        @app_commands.command(name="join", description="Your personal link to the web room (to speak from the browser)")
        @app_commands.describe(space=SPACE)
        async def join(interaction: discord.Interaction, space: str | None = None) -> None:
            actor = await me._actor(interaction.user)
            s = await me._space(interaction, space, actor=actor)
            await me._send_room(interaction, actor, s.id)

        @app_commands.command(name="subscribe", description="Subscribe to a creator's tier (a Stripe Checkout link)")
        @app_commands.describe(tier="The tier's id, or a Space for subscribers (its tier)")
        async def subscribe(interaction: discord.Interaction, tier: str) -> None:
            await me.cmd_subscribe(interaction, await me._actor(interaction.user), tier)

        made: tuple[app_commands.Command[Any, Any, None], ...] = (start, schedule, queue, pin, unpin, share, ticket,
                                                                   join, subscribe, *tier_commands(me))
        return {c.name: c for c in made}

    async def _checked(self, interaction: discord.Interaction, command: Command, space_id: str | None,
                       actor: Actor) -> Space:
        """The Space a command means, after the table's state and role checks (before anything Discord's own)."""
        s = await self._space(interaction, space_id, states=_pick_states(command), actor=actor)
        check_state(command, s)
        check_role(command, actor, role_in(s, actor.account_id))
        return s

    async def _table(self, interaction: discord.Interaction, command: Command, space_id: str | None,
                     args: dict[str, Any], *, member: discord.Member | None = None, who: str | None = None) -> None:
        """Run a table command for the caller on the Space they mean, and answer in the shared words.

        The table's state and role checks come first; then the person and the pin number are read."""
        actor = await self._actor(interaction.user)
        named = member is not None or bool(who)
        s: Space | None = None
        if _needs_space(command) and (command.scope == "space" or space_id or not named):
            s = await self._checked(interaction, command, space_id, actor)
        name = ""
        option = next((o for o in command.options if o.kind == "person"), None)
        if option is not None and member is not None:
            args[option.name], name = await self._account(member), member.display_name
        elif option is not None and who:
            args[option.name] = await person(self.core, s, who)
        elif option is not None and option.required:
            raise Invalid("chat.who")
        if "pin_number" in args:
            assert s is not None
            n = args.pop("pin_number")
            if n > len(s.pins):
                raise NotFound("pin.not_found", pin_id=str(n)[:MAX_ID])
            args["pin_id"] = s.pins[n - 1].id
        links = {"web": f"{self.public_url}/s/{s.id}"} if s is not None else {}
        out = await run(self.core, actor, command.name, s, args, table=self.table,
                        ports=Ports(tickets=ChatDesk(self.ledger), links=lambda _: links))
        named_id = out.data.get("account_id") or out.data.get("host_id")
        if not name and named_id:
            name = (await self.core.account(str(named_id))).display_name
        text = word(out, STYLE, name=name, title=s.title if s else "", pin_title=str(args.get("title", "")),
                    ticketed=s is not None and s.ticketing is not None)
        await self._reply(interaction, text, ephemeral=command.least_role == "anyone")  # moderation is public

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
        """A new Space with ``title``; else the scheduled one named (the table's start, its checks first)."""
        actor = await self._actor(interaction.user)
        s: Space | None = None
        if space_id or not title:
            s = await self._checked(interaction, _entry("start"), space_id, actor)
        if interaction.guild is not None:
            await self._preflight(interaction.guild, scheduled=False)
        if s is not None:
            await run(self.core, actor, "start", s)
        else:
            community = await self._community(interaction.guild) if interaction.guild else None
            s = await self.core.create_space(actor, title or "", topics=_topics(topic),
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

    async def cmd_subscribe(self, interaction: discord.Interaction, actor: Actor, target: str) -> None:
        """A Checkout link (subscription mode) for the tier ``target`` names; a tier sold only in Stars
        (no Stripe here) is pointed at the Telegram bot."""
        tier = await StarsSubscriptions(self.core).tier_for(target.strip())
        sales = SubscriptionSales(self.core, getattr(self.stripe_sales, "gateway", None), self.public_url,
                                  fee_bps=self.ledger.fee_bps)
        if sales.gateway is None and tier.stars:
            raise Conflict("discord.stars_subscription", tier_id=tier.id)
        checkout = await sales.checkout(actor, tier.id)
        view = discord.ui.View(timeout=None)
        view.add_item(discord.ui.Button(label="Subscribe", emoji="⭐", url=checkout.url))
        await self._reply(interaction, f"⭐ Subscribe to **{tier.name}** here (renewed monthly until you cancel).",
                          view=view)

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
        paying = purchase.ticket.amount_minor
        note = (f"; your subscriber price is {paying / 100:.2f} {t.currency.upper()} instead of "
                f"{t.price_minor / 100:.2f}" if paying != t.price_minor else "")
        await self._reply(interaction, f"🎟 Pay for **{s.title}** here; the seat is yours for {minutes} min{note}.",
                          view=view)
