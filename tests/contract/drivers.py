"""One driver per surface, so one scenario runs the same way on the web, Discord, Telegram and the CLI.

Why: the contract suite proves every table command behaves alike everywhere, so each driver does what
a person does on that surface (a WebSocket frame, a slash command, a chat message, a shell command)
and reads back only what that person sees: ``ok`` or the refusal's code. Chat replies carry words, not
codes, so the words are mapped back to the one code whose sentence they are (``core.messages``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from typer.testing import CliRunner

from adapters.chat.wording import CHAT_TEXT
from adapters.discord.base import _MISC_TEXT as DISCORD_TEXT
from adapters.discord.layout import FLAG_NAMES
from adapters.telegram.base import _MISC_TEXT as TELEGRAM_TEXT
from core.commands import BUILTIN_TABLE, Command, CommandTable
from core.messages import _TEXT as CORE_TEXT
from core.services import Core
from spacebridge.app import Instance
from spacebridge.cli import app as cli_app
from spacebridge.cli_commands import with_table
from tests.support.discord_fake import FakeDiscord, Guild
from tests.support.telegram_fake import Call, FakeBotAPI

TIMEOUT_S = 30.0
_serial = itertools.count(1)


@dataclass(frozen=True)
class Person:
    """Someone on one surface: their account, and how that surface knows them (user id, browser)."""

    account_id: str
    uid: int
    name: str


@dataclass(frozen=True)
class Result:
    """What the person saw: the command worked, or it was refused with ``code`` (``text``: the words)."""

    ok: bool
    code: str | None = None
    text: str = ""


class Inexpressible(Exception):
    """The surface's own controls cannot even say this (a typed boolean option given a word)."""


class Driver(Protocol):
    surface: str
    core: Core

    async def person(self, name: str) -> Person: ...

    async def run(self, who: Person, command: str, space_id: str, **args: Any) -> Result: ...

    def offered(self) -> set[str]: ...


# ---- words back to codes ---------------------------------------------------------------------------
@cache
def _patterns() -> list[tuple[int, str, re.Pattern[str]]]:
    texts: dict[str, str] = {**CORE_TEXT, **CHAT_TEXT, **DISCORD_TEXT, **TELEGRAM_TEXT}
    out = []
    for code, template in texts.items():
        parts = re.split(r"\{[^}]*\}", template)
        literal = sum(len(p) for p in parts)
        out.append((literal, code, re.compile(".+?".join(re.escape(p) for p in parts), re.DOTALL)))
        short = template.split("{")[0].rstrip(" (") + "."  # describe()'s fallback when data is missing
        out.append((len(short) - 1, code, re.compile(re.escape(short))))
    return sorted(out, key=lambda t: -t[0])


def code_of(words: str) -> str:
    """The error code whose sentence ``words`` is (the most specific template that matches)."""
    text = re.sub(r"<[^>]+>|\*\*|`", "", words.removeprefix("⚠️").strip())
    m = re.search(r"Refused \(([\w.]+)\)", text)
    if m:
        return m.group(1)
    for _, code, pattern in _patterns():
        if pattern.fullmatch(text):
            return code
    return f"?{text[:80]}"


def _chat_result(text: str) -> Result:
    if text.startswith("Something went wrong"):  # the bots' answer to a failure they did not expect
        return Result(False, "server.error", text)
    if text.startswith("⚠️"):
        return Result(False, code_of(text), text)
    return Result(True, None, text)


# ---- web -------------------------------------------------------------------------------------------
class WebDriver:
    """A browser: one WebSocket per person and Space (kept open, as a page is), command frames on it."""

    surface = "web"

    def __init__(self, platform: Instance) -> None:
        self.platform = platform
        self.core = platform.core
        self.http = aiohttp.ClientSession()
        self.sockets: dict[tuple[str, str], aiohttp.ClientWebSocketResponse] = {}
        self.welcome: dict[str, Any] = {}
        self._ids = itertools.count(1)

    async def close(self) -> None:
        for ws in self.sockets.values():
            await ws.close()
        await self.http.close()

    async def person(self, name: str) -> Person:
        n = next(_serial)
        acc = await self.core.ensure_account("web", f"browser-{n}", name)
        return Person(acc.id, n, name)

    async def _socket(self, who: Person, space_id: str) -> aiohttp.ClientWebSocketResponse | Result:
        ws = self.sockets.get((who.account_id, space_id))
        if ws is not None and not ws.closed:
            return ws
        token = self.platform.tokens.issue(space_id, who.account_id, "listener", self.core.now())
        ws = await self.http.ws_connect(f"{self.platform.url}/ws/{space_id}")
        await ws.send_json({"type": "hello", "token": token})
        first = await ws.receive_json(timeout=TIMEOUT_S)
        if first["type"] != "welcome":
            await ws.close()
            return Result(False, first.get("code"), str(first.get("message", "")))
        self.welcome = first
        self.sockets[(who.account_id, space_id)] = ws
        return ws

    async def run(self, who: Person, command: str, space_id: str, **args: Any) -> Result:
        ws = await self._socket(who, space_id)
        if isinstance(ws, Result):
            return ws
        n = next(self._ids)
        await ws.send_json({"type": "command", "id": n, "name": command, "args": args})
        while True:
            reply = await ws.receive_json(timeout=TIMEOUT_S)
            if reply.get("id") == n and reply["type"] in ("ok", "error"):
                if reply["type"] == "ok":
                    return Result(True, None, json.dumps(reply.get("result")))
                return Result(False, reply.get("code"), str(reply.get("message", "")))

    def offered(self) -> set[str]:
        return {c["name"] for c in self.welcome.get("commands", [])}


# ---- Discord ---------------------------------------------------------------------------------------
# Discord names a few table options its own way (typed options, a member picker); the rest keep the table's.


class DiscordDriver:
    """A guild member using the bot's slash commands in the fake Discord."""

    surface = "discord"

    def __init__(self, platform: Instance, fake: FakeDiscord, guild: Guild) -> None:
        self.platform = platform
        self.core = platform.core
        self.fake = fake
        self.guild = guild

    async def person(self, name: str) -> Person:
        uid = 310000000000000000 + next(_serial)
        self.fake.add_member(self.guild, uid, name)
        acc = await self.core.ensure_account("discord", str(uid), name)
        return Person(acc.id, uid, name)

    async def _options(self, command: str, space_id: str, args: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {} if command == "link" else {"space": space_id}
        for key, value in args.items():
            if key in ("person", "host"):
                out["who"] = value
            elif key in ("up", "on", "enabled", "block") and not isinstance(value, bool):
                raise Inexpressible(f"{key}={value!r}: a boolean option on Discord")
            elif (command, key) in FLAG_NAMES:  # the name Discord shows the table's flag under
                shown, inverted = FLAG_NAMES[(command, key)]
                out[shown] = not value if inverted else value
            elif key == "pin_id":
                pins = (await self.core.view(space_id)).space.pins
                out["number"] = next((n for n, p in enumerate(pins, 1) if p.id == value), len(pins) + 1)
            else:
                out[key] = value
        return out

    def _paths(self) -> dict[str, tuple[str, str | None]]:
        """Where each command lives in what the bot registered: name -> (top-level command, subcommand)."""
        out: dict[str, tuple[str, str | None]] = {}
        for c in self.fake.commands:
            subs = [o["name"] for o in c.get("options") or [] if o.get("type") == 1]
            out.update({s: (c["name"], s) for s in subs} if subs else {c["name"]: (c["name"], None)})
        return out

    async def run(self, who: Person, command: str, space_id: str, **args: Any) -> Result:
        options = await self._options(command, space_id, args)
        top, sub = self._paths()[command]
        iid = await self.fake.interact(self.guild, who.uid, top, sub, options)
        reply = await self.fake.reply(iid, timeout=TIMEOUT_S)
        return _chat_result(str(reply.get("content") or ""))

    def offered(self) -> set[str]:
        return set(self._paths())


# ---- Telegram --------------------------------------------------------------------------------------
class TelegramDriver:
    """A member of a group typing the bot's commands (and reading the bot's quoted answer)."""

    surface = "telegram"

    def __init__(self, platform: Instance, fake: FakeBotAPI, group: int) -> None:
        self.platform = platform
        self.core = platform.core
        self.fake = fake
        self.group = group
        self.table = platform.plugins.table  # how the words after a /command are read

    async def person(self, name: str) -> Person:
        uid = 500 + next(_serial)
        acc = await self.core.ensure_account("telegram", str(uid), name)
        return Person(acc.id, uid, name)

    @staticmethod
    def words(command: Command, args: Mapping[str, Any]) -> list[str]:
        if command.name == "pin":
            return [str(args.get("url", "")), str(args.get("title", ""))]
        out: list[str] = []
        for o in command.options:
            if o.name not in args:
                continue
            value = args[o.name]
            if isinstance(value, bool):
                out.append("on" if value else "off")
            else:
                out.append(str(value))
        return out

    async def say(self, chat: int, user: int, text: str, name: str) -> str:
        mark = len(self.fake.calls)
        msg_id = await self.fake.send_text(chat, user, text, name=name)

        def answer(c: Call) -> bool:
            if c.method != "sendMessage" or c.params.get("chat_id") != chat:
                return False
            quoted = (c.params.get("reply_parameters") or {}).get("message_id")
            return chat > 0 or quoted == msg_id

        call = await self.fake.wait_for(answer, timeout=TIMEOUT_S, after=mark)
        return str(call.params.get("text", ""))

    async def run(self, who: Person, command: str, space_id: str, **args: Any) -> Result:
        entry = self.table.get(command)
        words = self.words(entry, args) if entry is not None else []
        if command == "start":
            text = f"/space start {space_id}"
        elif command == "link":
            text = " ".join(["/link", *words])
        elif command in ("follow", "unfollow"):
            text = " ".join([f"/{command}", *(words or [space_id])])
        else:
            text = " ".join([f"/{command}", space_id, *words])
        chat = who.uid if command == "link" else self.group
        return _chat_result(await self.say(chat, who.uid, text, who.name))

    def offered(self) -> set[str]:
        calls = [c for c in self.fake.calls if c.method == "setMyCommands"]
        names = {str(c["command"]) for call in calls for c in call.params.get("commands", [])}
        return names | ({"start"} if "space" in names else set())  # the table's start is /space start ID


# ---- CLI -------------------------------------------------------------------------------------------
class CliDriver:
    """An operator's shell: ``spacebridge cmd NAME SPACE --as ACCOUNT --OPTION VALUE --json`` in a thread."""

    surface = "cli"

    def __init__(self, core: Core, env: Mapping[str, str], table: CommandTable = BUILTIN_TABLE) -> None:
        self.core = core
        self.env = dict(env)
        self.runner = CliRunner()
        self.table = table
        self.app = cli_app if table is BUILTIN_TABLE else with_table(cli_app, table)

    async def person(self, name: str) -> Person:
        n = next(_serial)
        acc = await self.core.ensure_account("web", f"shell-{n}", name)
        return Person(acc.id, n, name)

    def _invoke(self, argv: list[str]) -> tuple[int, dict[str, Any]]:
        r = self.runner.invoke(self.app, argv, env=self.env)
        lines = r.stdout.strip().splitlines()
        if not lines:
            return r.exit_code, {"error": {"code": f"?{r.output[-200:]}"}}
        return r.exit_code, json.loads(lines[-1])

    async def run(self, who: Person, command: str, space_id: str, **args: Any) -> Result:
        entry = self.table.get(command)
        space = "-" if entry is not None and entry.scope == "account" and command == "link" else space_id
        argv = ["cmd", command, space, "--as", who.account_id]
        for key, value in args.items():
            argv += [f"--{key.replace('_', '-')}", ("true" if value else "false") if isinstance(value, bool)
                     else str(value)]
        code, out = await asyncio.to_thread(self._invoke, [*argv, "--json"])
        if code == 0:
            return Result(True, None, json.dumps(out))
        err = out.get("error") or {}
        return Result(False, err.get("code"), str(err.get("message", "")))

    def offered(self) -> set[str]:
        """The commands ``spacebridge cmd --help`` lists (one paragraph each: ``name --option: summary``)."""
        r = self.runner.invoke(self.app, ["cmd", "--help"], env=self.env, terminal_width=400)
        return set(re.findall(r"^[\s│]*([a-z_]+)(?: --[a-z-]+\??)*: ", r.output, re.MULTILINE))


def data_env(tmp: Path, url: str) -> dict[str, str]:
    """The environment a shell on this instance has."""
    return {**os.environ, "SPACEBRIDGE_DATA_DIR": str(tmp), "SPACEBRIDGE_DATABASE_URL": url}
