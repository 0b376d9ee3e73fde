"""The plugin API: what an installed plugin is and the narrow context it gets.

A plugin is any object with ``name``, ``version``, ``setup(ctx)`` and ``teardown()`` (sync or
async), made by the callable its package exposes in the entry-point group ``spacebridge.plugins``.
Everything a plugin registers goes through its ``PluginContext`` so the platform can take it all
back at once: if ``setup`` raises, nothing of the plugin stays registered (plugins/manager.py).

Commands are declared once, platform-neutral (``Option`` kinds, a minimum role) and join the one
command table (core/commands.py) next to the core's own, so every surface offers them the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from aiohttp import web

from core import events as ev
from core.errors import DomainError, Invalid
from core.kv import KeyValueStore
from core.messages import add_wording
from core.model.accounts import Actor
from core.model.space import Space
from core.ports import AudioTap, AudioTick
from core.services import Core, Guard, SpaceView, TextFilter

GROUP = "spacebridge.plugins"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,31}$")

OptionKind = Literal["text", "number", "flag", "member", "person"]  # member: the old name of person
MinRole = Literal["anyone", "speaker", "moderator", "host"]
ROLE_RANK = {"listener": 0, "speaker": 1, "cohost": 2, "host": 3}
NEEDED_RANK: dict[str, int] = {"anyone": 0, "speaker": 1, "moderator": 2, "host": 3}


@dataclass(frozen=True)
class Option:
    """One argument of a command. ``person`` (or ``member``) is someone in the Space: an account id once
    resolved, or a queue position (core/commands.py)."""

    name: str
    description: str
    kind: OptionKind = "text"
    required: bool = False
    choices: tuple[str, ...] = ()  # for text options: the only values allowed


@dataclass(frozen=True)
class Invocation:
    """A command as the plugin sees it: who, in which Space, with their role there, and checked args."""

    actor: Actor
    space: Space
    role: str  # host | cohost | speaker | listener
    args: dict[str, Any]
    platform: str


@dataclass(frozen=True)
class Reply:
    text: str
    url: str | None = None


CommandHandler = Callable[[Invocation], Awaitable["Reply | str | None"]]


@dataclass(frozen=True)
class CommandSpec:
    plugin: str
    name: str
    description: str
    handler: CommandHandler
    options: tuple[Option, ...] = ()
    min_role: MinRole = "anyone"
    button: str | None = None  # label of a web room button (commands without required options)

    def public(self) -> dict[str, Any]:
        """What clients are told about the command (the web room draws buttons from this)."""
        return {"name": self.name, "plugin": self.plugin, "description": self.description,
                "min_role": self.min_role, "button": self.button,
                "options": [{"name": o.name, "kind": o.kind, "required": o.required,
                             "description": o.description, "choices": list(o.choices)} for o in self.options]}


Report = Callable[..., Awaitable[list[dict[str, Any]]]]
"""A plugin's read-only view of its own records: ``report(store, **args)``. A plugin lists its reports
in a ``reports`` class attribute (name -> function) so tools read them without loading the plugin."""


def plugin_store(core: Core, plugin: str) -> KeyValueStore:
    """The store plugin ``plugin`` keeps its records in (its ``PluginContext.store``)."""
    return KeyValueStore(core.sessionmaker, core.clock, plugin)


@runtime_checkable
class Plugin(Protocol):
    name: str
    version: str

    def setup(self, ctx: PluginContext) -> Awaitable[None] | None: ...

    def teardown(self) -> Awaitable[None] | None: ...


class Queries:
    """Read-only questions a plugin may ask the core."""

    def __init__(self, core: Core) -> None:
        self._core = core

    async def space(self, space_id: str) -> SpaceView:
        return await self._core.view(space_id)

    async def live_spaces(self) -> list[Space]:
        return await self._core.list_spaces(states=("live",))

    async def display_name(self, account_id: str) -> str:
        try:
            return (await self._core.account(account_id)).display_name
        except Exception:
            return account_id

    async def captions(self, space_id: str, limit: int = 20) -> list[dict[str, Any]]:
        return await self._core.recent_captions(space_id, limit)

    def now(self) -> Any:
        return self._core.now()

    async def may_hear_replay(self, space_id: str, account_id: str | None) -> bool:
        """May this person (None: a guest) hear the Space's replays and clips? A Space for subscribers
        keeps them for its host's subscribers at or above its tier (and its host and stage); any
        other Space's are for everyone. Read now, so a lapsed subscription no longer opens them."""
        space = (await self._core.view(space_id)).space
        rule = space.subscribers
        if rule is None:
            return True
        if account_id is None:
            return False
        if space.role_of(account_id) is not None:
            return True
        async with self._core.uow() as uow:
            return bool(await uow.subscriptions.reaching(space.host_id, rule.tier_id, [account_id], self._core.now()))


class Actions:
    """What a plugin may make happen. Moderator actions run as the person who invoked the command,
    so the core checks their role as for any other command; the rest speak as the platform."""

    def __init__(self, core: Core, source: str) -> None:
        self._core, self._source = core, source

    async def mute_all(self, actor: Actor, space_id: str) -> Space:
        return await self._core.mute_all(actor, space_id)

    async def mute(self, actor: Actor, space_id: str, account_id: str, muted: bool = True) -> Space:
        return await self._core.mute(actor, space_id, account_id, muted)

    async def remove(self, actor: Actor, space_id: str, account_id: str, *, block: bool, reason: str) -> Space:
        return await self._core.remove(actor, space_id, account_id, block=block, reason=reason)

    async def post_caption(self, space_id: str, speaker_id: str, text: str, start_s: float, end_s: float) -> bool:
        return await self._core.add_caption(space_id, speaker_id, text, start_s, end_s)

    async def notice(self, space_id: str, text: str, *, account_id: str | None = None, kind: str = "info") -> None:
        await self._core.notice(space_id, self._source, text, account_id=account_id, kind=kind)

    async def set_badge(self, space_id: str, text: str | None) -> None:
        await self._core.set_badge(space_id, self._source, text)


@dataclass
class Registrations:
    """Everything one plugin registered, so it can be taken back in one go."""

    subscriptions: list[Any] = field(default_factory=list)
    commands: list[CommandSpec] = field(default_factory=list)
    guards: list[Guard] = field(default_factory=list)
    filters: list[TextFilter] = field(default_factory=list)
    routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = field(
        default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


# Set by the composition root on the web application: who is signing a request (their account id,
# or None). Plugins ask through ``PluginContext.viewer``, never the session machinery itself.
VIEWER: web.AppKey[Callable[[web.Request], Awaitable[str | None]]] = web.AppKey("spacebridge.viewer")


class PluginContext:
    """The narrow door a plugin gets into the platform (see DESIGN.md, "Plugins")."""

    def __init__(self, *, core: Core, name: str, version: str, audio: AudioTap | None, config: dict[str, Any],
                 data_dir: Path, public_url: str, enabled: Callable[[str], Awaitable[bool]],
                 several_processes: bool = False) -> None:
        self.name, self.version = name, version
        # True when other processes run this plugin too (docs/deploy.md): what one process keeps in
        # memory another does not see, and work done from events may need to be done only once.
        self.several_processes = several_processes
        self.log = logging.getLogger(f"spacebridge.plugins.{name}")
        self.store = plugin_store(core, name)
        self.queries = Queries(core)
        self.actions = Actions(core, name)
        self.audio = audio
        self.config = dict(config)
        self.data_dir = data_dir
        self.public_url = public_url.rstrip("/")
        self._core = core
        self._enabled = enabled
        self.registered = Registrations()
        self.active = False  # True once setup succeeded; only what setup registered is ever made live

    # ---- events ------------------------------------------------------------------------------
    def subscribe(self, handler: Callable[[ev.Event], Awaitable[None]], *names: str,
                  local_only: bool = False) -> None:
        """Domain events (all, or only these names), only for Spaces of Communities that enabled it.

        With several processes on one bus every process sees every event; ``local_only`` takes only
        those committed here, so a durable side effect (an audit entry) happens once."""

        async def deliver(event: ev.Event) -> None:
            if not self.active:  # not until setup has succeeded: a plugin that fails never sees an event
                return
            space_id = getattr(event, "space_id", None)
            if space_id is not None and not await self._enabled(space_id):
                return
            try:
                await handler(event)
            except Exception:
                self.log.exception("plugin %s failed on %s", self.name, event.name)

        deliver.__qualname__ = f"plugin:{self.name}:{getattr(handler, '__qualname__', 'handler')}"
        self.registered.subscriptions.append(self._core.bus.subscribe(deliver, names or None,
                                                                      local_only=local_only))

    # ---- commands, hooks, routes ---------------------------------------------------------------
    def command(self, name: str, description: str, handler: CommandHandler, *, options: Iterable[Option] = (),
                min_role: MinRole = "anyone", button: str | None = None) -> None:
        if not NAME_RE.match(name):
            raise Invalid("plugin.bad_command_name", name=name)
        if min_role not in NEEDED_RANK:
            raise Invalid("plugin.bad_min_role", name=name, allowed=sorted(NEEDED_RANK))
        opts = tuple(options)
        for o in opts:
            if not NAME_RE.match(o.name) or o.kind not in ("text", "number", "flag", "member", "person"):
                raise Invalid("plugin.bad_option", option=o.name, problem="bad name or kind")
            if o.name == "space":  # every platform adds its own "which Space" option under this name
                raise Invalid("plugin.bad_option", option=o.name, problem="the name space is reserved")
        if button and any(o.required for o in opts):
            raise Invalid("plugin.bad_option", option=name, problem="a button cannot fill required options")
        self.registered.commands.append(CommandSpec(self.name, name, description[:100], handler, opts, min_role,
                                                    button))

    def guard(self, fn: Guard) -> None:
        """Called before reactions and raised hands; raise a DomainError (e.g. RateLimited) to refuse.
        A guard that breaks any other way is logged and ignored: it must not stop people reacting."""

        async def guarded(actor: Actor, space_id: str, action: str) -> None:
            if not await self._enabled(space_id):
                return
            try:
                await fn(actor, space_id, action)
            except DomainError:
                raise
            except Exception:
                self.log.exception("plugin %s: guard failed; allowing %s", self.name, action)

        self.registered.guards.append(guarded)

    def text_filter(self, fn: TextFilter) -> None:
        """Rewrites captions, pin titles and notices before anyone sees them (unchanged if it breaks)."""

        async def guarded(kind: str, space_id: str, text: str) -> str:
            if not await self._enabled(space_id):
                return text
            try:
                return await fn(kind, space_id, text)
            except Exception:
                self.log.exception("plugin %s: text filter failed; text left as it was", self.name)
                return text

        self.registered.filters.append(guarded)

    def route(self, method: str, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        """A web page or file under ``/p/<plugin>/<path>`` (e.g. the replay page)."""
        if not path.startswith("/"):
            raise Invalid("plugin.bad_route", path=path)
        self.registered.routes.append((method.upper(), path, handler))

    def wording(self, texts: dict[str, str]) -> None:
        """Sentences for this plugin's own error codes, used by every adapter."""
        add_wording(texts)

    def url(self, path: str) -> str:
        return f"{self.public_url}/p/{self.name}{path}"

    async def viewer(self, request: web.Request) -> str | None:
        """The signed-in account behind a request to one of this plugin's routes (None: a guest)."""
        find = request.app.get(VIEWER)
        return None if find is None else await find(request)

    # ---- work ---------------------------------------------------------------------------------
    def spawn(self, coro: Awaitable[None], what: str = "task") -> asyncio.Task[None]:
        """Background work, cancelled at teardown; a crash is logged, never raised into the platform."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("plugin %s: %s failed", self.name, what)

        task = asyncio.ensure_future(guarded())
        self.registered.tasks.add(task)
        task.add_done_callback(self.registered.tasks.discard)
        return task

    def every(self, seconds: float, fn: Callable[[], Awaitable[object]], what: str = "periodic job") -> None:
        """Run ``fn`` now and then every ``seconds`` (e.g. the retention cleanup)."""

        async def loop() -> None:
            while True:
                try:
                    await fn()
                except Exception:
                    self.log.exception("plugin %s: %s failed", self.name, what)
                await asyncio.sleep(seconds)

        self.spawn(loop(), what)

    async def enabled_for(self, space_id: str) -> bool:
        return await self._enabled(space_id)

    async def ticks(self, space_id: str) -> AsyncIterator[AudioTick]:
        """The room's audio, per 20 ms tick: the mix and each speaker (see core.ports.AudioTick)."""
        if self.audio is None:
            return
        async for t in self.audio.ticks(space_id):
            yield t

    async def cancel_tasks(self) -> None:
        tasks = list(self.registered.tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
