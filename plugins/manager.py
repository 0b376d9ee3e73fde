"""Finds, loads and runs plugins, and is the one place their commands are checked and dispatched.

Loading is atomic: a plugin's registrations are collected by its context while ``setup`` runs and
only become live when it returns; if it raises (or hangs past ``setup_timeout_s``) they are all
taken back and the plugin is recorded as failed, which ``spacebridge doctor`` and
``spacebridge plugins list`` report. A failing handler is logged and answered with a clear error;
it never takes the platform down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.command_model import Invocation as TableInvocation
from core.command_model import Option as TableOption
from core.commands import BUILTINS, Command, CommandTable, Kind, Outcome
from core.errors import DomainError, Forbidden, Invalid, NotFound
from core.kv import KeyValueStore
from core.messages import describe
from core.model.accounts import Actor
from core.model.space import Space, SpaceState
from core.ports import AudioTap
from core.services import Core
from plugins.api import (
    GROUP,
    NAME_RE,
    NEEDED_RANK,
    ROLE_RANK,
    CommandSpec,
    Invocation,
    Plugin,
    PluginContext,
    Reply,
    plugin_store,
)

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger(__name__)
STATUS_NS = "spacebridge"
MAX_TEXT_ARG = 500
ENABLED_TTL_S = 5.0
OFF_BY_SETTING = "turned off by SPACEBRIDGE_PLUGINS_DISABLED"


@dataclass
class PluginStatus:
    name: str
    version: str
    state: str  # loaded | failed | disabled
    error: str = ""
    source: str = ""  # the entry point, "module:attr"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "state": self.state, "error": self.error,
                "source": self.source}


def discover() -> list[EntryPoint]:
    """Installed plugins, first-party ones included, in name order."""
    return sorted(entry_points(group=GROUP), key=lambda e: e.name)


async def read_report(core: Core, plugin: str, report: str, **args: Any) -> list[dict[str, Any]]:
    """An installed plugin's report ``report`` on its records (``plugins.api.Report``), read without
    loading the plugin: no setup, no events, no commands; what the CLI shows of a plugin."""
    ep = next((e for e in discover() if e.name == plugin), None)
    reports = getattr(ep.load(), "reports", {}) if ep is not None else {}
    fn = reports.get(report)
    if fn is None:
        raise NotFound("plugin.no_report", plugin=plugin, report=report)
    records: list[dict[str, Any]] = await fn(plugin_store(core, plugin), **args)
    return records


def instantiate(target: Any) -> Any:
    """An entry point names a plugin class, a factory function, or a ready plugin object."""
    if isinstance(target, type) or (callable(target) and not isinstance(target, Plugin)):
        return target()
    return target


def role_in(space: Space, account_id: str) -> str:
    if account_id == space.host_id:
        return "host"
    if account_id in space.cohosts:
        return "cohost"
    if account_id in space.speakers:
        return "speaker"
    return "listener"


async def _maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


class PluginManager:
    def __init__(self, core: Core, *, audio: AudioTap | None = None, config: dict[str, dict[str, Any]] | None = None,
                 data_dir: Path, public_url: str = "", disabled: Iterable[str] = (),
                 reserved: Iterable[str] = (), setup_timeout_s: float = 30.0, several_processes: bool = False,
                 table: Iterable[Command] = BUILTINS) -> None:
        """``table``: the entries every surface offers before plugins add theirs (the core's ``BUILTINS``)."""
        self.core, self.audio = core, audio
        self.several_processes = several_processes
        self.config = config or {}
        self.data_dir, self.public_url = data_dir, public_url
        self.disabled = set(disabled)
        self.reserved = set(reserved)
        self.setup_timeout_s = setup_timeout_s
        self.plugins: dict[str, tuple[Plugin, PluginContext]] = {}
        self.statuses: dict[str, PluginStatus] = {}
        self.commands: dict[str, CommandSpec] = {}
        self.table = CommandTable(table)  # the one command table: the core's and every loaded plugin's
        self.routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = []
        self._kv = KeyValueStore(core.sessionmaker, core.clock, STATUS_NS)
        self._space_community: dict[str, str | None] = {}
        self._community_off: dict[str, tuple[float, frozenset[str]]] = {}

    def set_public_url(self, url: str) -> None:
        """Known only once the web server is bound (port 0 in tests); links made later use it."""
        self.public_url = url.rstrip("/")
        for _, ctx in self.plugins.values():
            ctx.public_url = self.public_url

    # ---- loading ---------------------------------------------------------------------------------
    async def load_installed(self) -> None:
        for ep in discover():
            await self.load_entry_point(ep)

    async def load_entry_point(self, ep: EntryPoint) -> PluginStatus:
        source = ep.value
        if ep.name in self.disabled:
            return await self._record(PluginStatus(ep.name, "", "disabled", OFF_BY_SETTING, source))
        try:
            plugin = instantiate(ep.load())
        except Exception as e:
            log.exception("plugin %s could not be imported", ep.name)
            return await self._record(PluginStatus(ep.name, "", "failed", f"import: {e!r}"[:500], source))
        return await self.load(plugin, source=source, entry_name=ep.name)

    async def load(self, plugin: Any, *, source: str = "", entry_name: str = "") -> PluginStatus:
        """Set one plugin up; on any failure nothing it registered stays."""
        name = str(getattr(plugin, "name", "") or "")
        version = str(getattr(plugin, "version", "") or "")
        if not isinstance(plugin, Plugin) or not NAME_RE.match(name):
            return await self._record(PluginStatus(entry_name or name or source or "?", version, "failed",
                                                   "not a plugin: needs name (a-z, 0-9, _), version, setup(ctx), "
                                                   "teardown()", source))
        if name in self.plugins:
            return await self._record(PluginStatus(name, version, "failed", "another plugin has this name", source))
        if name in self.disabled:
            return await self._record(PluginStatus(name, version, "disabled", OFF_BY_SETTING, source))
        ctx = PluginContext(core=self.core, name=name, version=version, audio=self.audio,
                            config=self.config.get(name, {}), data_dir=self.data_dir / "plugins" / name,
                            public_url=self.public_url, enabled=functools.partial(self.enabled, name),
                            several_processes=self.several_processes)
        try:
            await asyncio.wait_for(_maybe_await(plugin.setup(ctx)), self.setup_timeout_s)
            self._check_commands(ctx)
        except Exception as e:
            await self._take_back(plugin, ctx)
            log.exception("plugin %s failed to set up; it is not loaded", name)
            if isinstance(e, TimeoutError):
                err = "setup took too long"
            elif isinstance(e, DomainError):
                err = "setup: " + describe(e)
            else:
                err = f"setup: {e!r}"
            return await self._record(PluginStatus(name, version, "failed", err[:500], source))
        reg = ctx.registered
        for c in reg.commands:
            self.commands[c.name] = c
            self.table.add(self._table_command(c))
        self.core.guards.extend(reg.guards)
        self.core.text_filters.extend(reg.filters)
        self.routes.extend((m, f"/p/{name}{p}", h) for m, p, h in reg.routes)
        ctx.active = True
        self.plugins[name] = (plugin, ctx)
        log.info("plugin %s %s loaded (%d commands)", name, version, len(reg.commands))
        return await self._record(PluginStatus(name, version, "loaded", "", source))

    def _check_commands(self, ctx: PluginContext) -> None:
        seen: set[str] = set()
        for c in ctx.registered.commands:
            if c.name in self.reserved or c.name in self.commands or c.name in self.table or c.name in seen:
                raise Invalid("plugin.command_taken", name=c.name)
            seen.add(c.name)

    async def _take_back(self, plugin: Plugin, ctx: PluginContext) -> None:
        reg = ctx.registered
        bus = self.core.bus
        unsubscribe = getattr(bus, "unsubscribe", None)
        for sub in reg.subscriptions:
            # let events already queued finish, then wait for the worker to unwind: a handler cancelled
            # in the middle of a query must roll back while the database is still there
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sub.queue.join(), 5.0)
            if unsubscribe is not None:
                unsubscribe(sub)
            if sub.task is not None:
                await asyncio.wait([sub.task], timeout=5.0)
        for c in reg.commands:
            if self.commands.get(c.name) is c:
                del self.commands[c.name]
                self.table.remove(c.name)
        for g in reg.guards:
            with contextlib.suppress(ValueError):
                self.core.guards.remove(g)
        for f in reg.filters:
            with contextlib.suppress(ValueError):
                self.core.text_filters.remove(f)
        self.routes = [r for r in self.routes if not r[1].startswith(f"/p/{ctx.name}/")]
        await ctx.cancel_tasks()
        try:
            await asyncio.wait_for(_maybe_await(plugin.teardown()), self.setup_timeout_s)
        except Exception:
            log.exception("plugin %s failed in teardown", ctx.name)

    async def unload_all(self) -> None:
        for name in reversed(list(self.plugins)):
            plugin, ctx = self.plugins.pop(name)
            await self._take_back(plugin, ctx)

    async def _record(self, status: PluginStatus) -> PluginStatus:
        self.statuses[status.name] = status
        with contextlib.suppress(Exception):  # a status we cannot save must not stop the platform
            await self._kv.put(f"plugin:{status.name}", {**status.as_dict(), "at": self.core.now().isoformat()})
        return status

    async def last_statuses(self) -> list[dict[str, Any]]:
        """What the serving process recorded (for `doctor` and `plugins list` in another process)."""
        return [e.value for e in await self._kv.scan("plugin:")]

    # ---- per-Community switch ------------------------------------------------------------------
    async def enabled(self, plugin: str, space_id: str) -> bool:
        if space_id not in self._space_community:
            try:
                self._space_community[space_id] = (await self.core.view(space_id)).space.community_id
            except NotFound:
                return False
        community_id = self._space_community[space_id]
        if community_id is None:
            return True
        now = time.monotonic()
        cached = self._community_off.get(community_id)
        if cached is None or now - cached[0] > ENABLED_TTL_S:
            try:
                off = frozenset((await self.core.community(community_id)).settings.plugins_disabled)
            except NotFound:
                off = frozenset()
            cached = self._community_off[community_id] = (now, off)
        return plugin not in cached[1]

    # ---- commands ---------------------------------------------------------------------------------
    def command_list(self) -> list[CommandSpec]:
        return sorted(self.commands.values(), key=lambda c: c.name)

    async def invoke(self, name: str, actor: Actor, space_id: str, args: dict[str, Any], platform: str) -> Reply:
        """Check everything a user could get wrong, then run the plugin's handler."""
        spec = self.commands.get(name)
        if spec is None:
            raise NotFound("plugin.unknown_command", name=name[:40], known=sorted(self.commands))
        space = (await self.core.view(space_id)).space
        if not await self.enabled(spec.plugin, space_id):
            raise Forbidden("plugin.disabled", plugin=spec.plugin)
        role = role_in(space, actor.account_id)
        needed = NEEDED_RANK[spec.min_role]
        if ROLE_RANK[role] < needed and not actor.is_operator:
            code = {1: "role.stage_required", 2: "role.moderator_required", 3: "role.host_required"}[needed]
            raise Forbidden(code, role=role)
        if space.state != SpaceState.LIVE and space.state != SpaceState.SCHEDULED:
            raise Forbidden("space.closed", state=space.state.value)
        return await self._run(spec, actor, space, role, self._check_args(spec, args), platform)

    def _table_command(self, spec: CommandSpec) -> Command:
        """The plugin command as an entry of the one table: the table checks arguments, state and role,
        then this runs it as ``invoke`` would (plugin switched on here, the handler's failures contained)."""
        async def run(i: TableInvocation) -> Outcome:
            assert i.space is not None
            reply = await self._run(spec, i.actor, i.space, i.role, dict(i.args), i.actor.platform)
            return Outcome("plugin.reply", {"plugin": spec.plugin, "text": reply.text, "url": reply.url},
                           {"text": reply.text, "url": reply.url})

        kinds: dict[str, Kind] = {"member": "person", "person": "person", "number": "number", "flag": "flag"}
        options = tuple(TableOption(o.name, "choice" if o.choices else kinds.get(o.kind, "text"), o.description,
                                    o.required, o.choices, MAX_TEXT_ARG if o.kind == "text" else None)
                        for o in spec.options)
        return Command(spec.name, spec.description, run, options, spec.min_role, ("scheduled", "live"),
                       spec.button, None, "space", False, spec.plugin)

    async def _run(self, spec: CommandSpec, actor: Actor, space: Space, role: str, checked: dict[str, Any],
                   platform: str) -> Reply:
        if not await self.enabled(spec.plugin, space.id):
            raise Forbidden("plugin.disabled", plugin=spec.plugin)
        if NEEDED_RANK[spec.min_role] == 0 and not actor.is_operator:
            await self.core.may_join(actor.account_id, space.id)
        try:
            result = await spec.handler(Invocation(actor, space, role, checked, platform))
        except DomainError:
            raise
        except Exception:
            log.exception("plugin %s: command %s failed", spec.plugin, spec.name)
            raise Invalid("plugin.failed", plugin=spec.plugin) from None
        if isinstance(result, Reply):
            return result
        return Reply(str(result) if result else "Done.")

    @staticmethod
    def _check_args(spec: CommandSpec, args: dict[str, Any]) -> dict[str, Any]:
        known = {o.name: o for o in spec.options}
        extra = set(args) - set(known)
        if extra:
            raise Invalid("plugin.bad_option", option=sorted(extra)[0], problem="not an option of this command")
        out: dict[str, Any] = {}
        for o in spec.options:
            v = args.get(o.name)
            if v is None or v == "":
                if o.required:
                    raise Invalid("plugin.missing_option", option=o.name, command=spec.name)
                continue
            if o.kind == "number":
                if isinstance(v, bool) or not isinstance(v, int | str):
                    raise Invalid("plugin.bad_option", option=o.name, problem="must be a whole number")
                try:
                    v = int(v)
                except ValueError:
                    raise Invalid("plugin.bad_option", option=o.name, problem="must be a whole number") from None
            elif o.kind == "flag":
                if isinstance(v, str) and v.lower() in ("on", "yes", "true", "1", "off", "no", "false", "0"):
                    v = v.lower() in ("on", "yes", "true", "1")
                if not isinstance(v, bool):
                    raise Invalid("plugin.bad_option", option=o.name, problem="must be on or off")
            else:
                if not isinstance(v, str):
                    raise Invalid("plugin.bad_option", option=o.name, problem="must be text")
                v = " ".join(v.split())[:MAX_TEXT_ARG]
                if o.choices and v.lower() not in o.choices:
                    raise Invalid("plugin.bad_option", option=o.name, problem="must be one of " + ", ".join(o.choices))
                if o.choices:
                    v = v.lower()
            out[o.name] = v
        return out
