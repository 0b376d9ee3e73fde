"""``spacebridge doctor``: one line per thing that must work, and what to do when it does not.

It checks what ``serve`` will need (an address it can bind, a writable data directory with free
disk, a reachable and migrated database, Redis for the chosen roles) and never crashes: a check
that cannot even run says so in its line. ``serve`` runs the same checks before it starts, so both
word a problem the same way.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from core.errors import Unavailable
from core.storage import migrate
from core.storage.engine import DatabaseURLError, check_url, is_outage, make_engine
from spacebridge.config import Settings, data_dir

# View Channel, Send Messages, Embed Links, Connect, Speak, Mute Members, Move Members, Manage Channels,
# Manage Roles (ticket role), Manage Events (scheduled Spaces): what the Discord adapter asks for.
DISCORD_PERMISSIONS = 8_882_506_768

Check = dict[str, Any]


async def run_checks(settings: Settings) -> list[Check]:
    checks: list[Check] = [{"name": "config", "ok": True, "detail": "valid"}]
    checks.append(await _safe("listen", lambda: check_listen(settings)))
    checks.append(await _safe("data dir", lambda: check_data_dir(settings)))
    checks.append(await _safe("database", lambda: check_database(settings)))
    checks.append(await _safe("redis", lambda: check_redis(settings)))
    checks.append(await _safe("fan-out", check_fanout))
    checks.append(await _safe("command server", check_command_server))
    for name, value, env in (("discord", settings.discord_bot_token, "DISCORD_BOT_TOKEN"),
                             ("telegram", settings.telegram_bot_token, "TELEGRAM_BOT_TOKEN")):
        if not (value and value.get_secret_value().strip()):
            checks.append({"name": name, "ok": False, "optional": True, "detail": f"off: set {env} to enable"})
        elif name == "telegram":
            checks.append(await _safe(name, lambda: _telegram(settings)))
        else:
            checks.append(await _safe(name, lambda: _discord(settings)))
    try:
        checks.extend(await _plugins(settings))
    except Exception as e:
        checks.append({"name": "plugins", "ok": False, "detail": f"could not be listed: {_one_line(e)}"})
    if settings.ticketing_enabled:
        checks.append({"name": "ticketing", "ok": True, "detail": "Stripe keys set"})
    else:
        checks.append({"name": "ticketing", "ok": False, "optional": True,
                       "detail": "off: set STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET to sell tickets"})
    return checks


async def check_fanout() -> Check:
    """Which engine sends the room's audio to WebRTC listeners: the native extension or the Python path."""
    from adapters.webrtc.fanout import choose_engine

    engine = choose_engine()
    if engine.problem:
        return {"name": "fan-out", "ok": False, "detail": f"{engine.problem}; sending with the {engine.detail}"}
    return {"name": "fan-out", "ok": True, "detail": engine.detail}


async def check_command_server() -> Check:
    """Whether CLI commands on this data dir take the fast path (docs/cli.md): a command server that
    ``serve`` started answers on the data dir's socket, and whether this very command ran through it."""
    from spacebridge import cli_client, cli_server

    name = "command server"
    if not cli_client.enabled():
        return {"name": name, "ok": False, "optional": True,
                "detail": f"off ({cli_client.OFF_VARIABLE}=off): every command starts directly"}
    path = cli_client.socket_path()
    facts = await asyncio.to_thread(cli_client.ask, path, "ping")
    if not facts or "pong" not in facts:
        return {"name": name, "ok": False, "optional": True,
                "detail": f"not running: commands start directly (`serve` runs one at {path})"}
    how = "this command ran through it" if cli_server.IN_CHILD else "this command ran directly"
    return {"name": name, "ok": True, "detail": f"in use at {path} (pid {facts.get('pid')}, "
                                                f"{facts.get('served')} commands served); {how}"}


def all_ok(checks: list[Check]) -> bool:
    return all(c["ok"] or c.get("optional") for c in checks)


async def _safe(name: str, check: Callable[[], Awaitable[Check]]) -> Check:
    """A check that raises is a failed line, never a crash of doctor."""
    try:
        return await check()
    except Exception as e:
        return {"name": name, "ok": False, "detail": f"could not be checked: {_one_line(e)}"}


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:240]}" if text else type(e).__name__


# ---- listen address ------------------------------------------------------------------------------
async def check_listen(settings: Settings) -> Check:
    """Bind the address serve will listen on (and let go at once): catches a port in use or a bad host."""
    if not set(settings.roles) & {"web", "media"}:
        return {"name": "listen", "ok": True, "detail": "no web or media role: serve listens on nothing"}
    host, port = settings.host, settings.port
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)
    except OSError as e:
        return {"name": "listen", "ok": False,
                "detail": f"cannot resolve SPACEBRIDGE_HOST {host!r} ({e.strerror or e}); use an address of this "
                          "machine, e.g. 127.0.0.1 or 0.0.0.0"}
    for family, type_, proto, _, addr in infos:
        with socket.socket(family, type_, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp does
            try:
                s.bind(addr)
            except OSError as e:
                return {"name": "listen", "ok": False, "detail": listen_problem(host, port, e)}
    return {"name": "listen", "ok": True, "detail": f"{host}:{port} is free" if port else f"{host}: a free port"}


def listen_problem(host: str, port: int, e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is in use by another program: stop it or set SPACEBRIDGE_PORT "
                "(or --port) to a free port")
    if e.errno == errno.EACCES:
        return f"not allowed to listen on port {port}: ports below 1024 need privileges; set SPACEBRIDGE_PORT"
    if e.errno == errno.EADDRNOTAVAIL:
        return (f"{host} is not an address of this machine: set SPACEBRIDGE_HOST (or --host) to one, "
                "e.g. 127.0.0.1 or 0.0.0.0")
    return f"cannot listen on {host}:{port}: {e.strerror or e}; check SPACEBRIDGE_HOST and SPACEBRIDGE_PORT"


# ---- data directory ------------------------------------------------------------------------------
async def check_data_dir(settings: Settings) -> Check:
    return await asyncio.to_thread(_check_data_dir, settings)


def _check_data_dir(settings: Settings) -> Check:
    where = data_dir()
    try:
        where.mkdir(parents=True, exist_ok=True)
        probe = where / f".doctor-{uuid.uuid4().hex}"
        with open(probe, "wb") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        if e.errno == errno.ENOSPC:
            return {"name": "data dir", "ok": False, "detail": f"{where}: the disk is full; free some space"}
        return {"name": "data dir", "ok": False,
                "detail": f"{where} is not a writable directory ({e.strerror or e}); set SPACEBRIDGE_DATA_DIR "
                          "to one this user can write"}
    free_mb = shutil.disk_usage(where).free // (1024 * 1024)
    if free_mb < settings.min_free_disk_mb:
        return {"name": "data dir", "ok": False,
                "detail": f"{where}: only {free_mb} MB free on its disk (below SPACEBRIDGE_MIN_FREE_DISK_MB="
                          f"{settings.min_free_disk_mb}); free some space"}
    return {"name": "data dir", "ok": True, "detail": f"{where} is writable, {free_mb} MB free"}


# ---- database ------------------------------------------------------------------------------------
async def check_database(settings: Settings) -> Check:
    url = settings.resolved_database_url()
    shown = shown_url(url)
    try:
        check_url(url)
    except DatabaseURLError as e:
        return {"name": "database", "ok": False, "detail": f"SPACEBRIDGE_DATABASE_URL {e}"}
    engine = None
    try:
        engine = make_engine(url, connect_timeout_s=settings.database_connect_timeout_s,
                             statement_timeout_s=settings.database_statement_timeout_s)
        limit = settings.database_connect_timeout_s + settings.database_statement_timeout_s
        current = await asyncio.wait_for(migrate.current_revision(engine), limit)
        head = migrate.head_revision()
        if current == head:
            return {"name": "database", "ok": True, "detail": f"{shown} at schema {head}"}
        if engine.dialect.name == "sqlite":
            return {"name": "database", "ok": True,
                    "detail": f"{shown} at schema {current or 'empty'}; serve upgrades it to {head}"}
        return {"name": "database", "ok": False, "detail": f"{shown} at schema {current or 'empty'}, "
                f"needs {head}: run `spacebridge db upgrade`"}
    except Exception as e:
        return {"name": "database", "ok": False, "detail": database_problem(settings, e)}
    finally:
        if engine is not None:
            try:
                await asyncio.wait_for(engine.dispose(), 5)
            except Exception:  # a dead connection cannot be closed politely; the check already said so
                pass


def shown_url(url: str) -> str:
    """The URL without its user and password (for messages and logs)."""
    return url.split("@")[-1] if "@" in url else url


def _sqlstate(e: BaseException) -> str | None:
    seen: set[int] = set()
    todo: list[BaseException | None] = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        state = getattr(x, "sqlstate", None)
        if isinstance(state, str) and state:
            return state
        todo += [x.__cause__, x.__context__, getattr(x, "orig", None)]
    return None


def database_problem(settings: Settings, e: BaseException) -> str:
    """One sentence: what is wrong with the configured database, and what to change."""
    url = settings.resolved_database_url()
    if isinstance(e, DatabaseURLError):
        return f"SPACEBRIDGE_DATABASE_URL {e}"
    try:
        u = make_url(url)
    except Exception:
        return "SPACEBRIDGE_DATABASE_URL is not a database URL"
    if u.get_backend_name() == "sqlite":
        path = Path(u.database or "")
        text = " ".join(str(x) for x in (e, getattr(e, "orig", None)) if x is not None).lower()
        where = "SPACEBRIDGE_DATABASE_URL" if settings.database_url else "SPACEBRIDGE_DATA_DIR"
        if "disk is full" in text or getattr(e, "errno", None) == errno.ENOSPC:
            return f"the disk holding the SQLite database {path} is full: free some space"
        if "readonly" in text or "read-only" in text:
            return f"the SQLite database {path} is read-only: make it (and its directory) writable or change {where}"
        if isinstance(e, OSError) or "unable to open" in text:
            return (f"cannot open the SQLite database {path}: its directory is missing or not writable; "
                    f"set {where} to a place this user can write")
        return f"the SQLite database {path} cannot be used ({_one_line(e)}); check {where}"
    at = f"{u.host or 'localhost'}:{u.port or 5432}"
    state = _sqlstate(e)
    if state == "3D000":
        return (f"PostgreSQL at {at} has no database {u.database!r}: create it (createdb -h {u.host or 'localhost'} "
                f"-p {u.port or 5432} {u.database}) or fix the name in SPACEBRIDGE_DATABASE_URL")
    if state is not None and state.startswith("28"):
        return (f"PostgreSQL at {at} refused user {u.username!r}: check the user and password in "
                "SPACEBRIDGE_DATABASE_URL")
    if isinstance(e, TimeoutError) or isinstance(e.__cause__, TimeoutError):
        return (f"PostgreSQL at {at} did not answer within {settings.database_connect_timeout_s:g} s: is it running "
                "and reachable from here? check SPACEBRIDGE_DATABASE_URL")
    if isinstance(e, Unavailable) or is_outage(e) or isinstance(e, OSError):
        cause = e.__cause__ if isinstance(e, Unavailable) and e.__cause__ is not None else e
        why = getattr(cause, "strerror", None) or _one_line(cause)
        return f"cannot reach PostgreSQL at {at} ({why}): is it running? check SPACEBRIDGE_DATABASE_URL"
    return f"the database at {shown_url(url)} cannot be used ({_one_line(e)}); check SPACEBRIDGE_DATABASE_URL"


# ---- redis ---------------------------------------------------------------------------------------
def redis_needed(settings: Settings) -> bool:
    """Several processes (a subset of roles) share events and media placement through Redis."""
    return set(settings.roles) != {"web", "jobs", "discord", "telegram", "media"}


async def check_redis(settings: Settings) -> Check:
    if not settings.redis_url:
        if redis_needed(settings):
            return {"name": "redis", "ok": False,
                    "detail": f"roles {','.join(settings.roles)} run beside other processes, which share events and "
                              "media through Redis: set SPACEBRIDGE_REDIS_URL (docs/deploy.md)"}
        return {"name": "redis", "ok": False, "optional": True,
                "detail": "not set: events stay in this process (set SPACEBRIDGE_REDIS_URL for several)"}
    problem = await redis_problem(settings)
    if problem:
        return {"name": "redis", "ok": False, "detail": problem}
    return {"name": "redis", "ok": True, "detail": f"{shown_url(settings.redis_url)} answers"}


async def redis_problem(settings: Settings, timeout_s: float = 3.0) -> str | None:
    """None if Redis answers a PING within ``timeout_s``; else a sentence saying what to fix."""
    import redis.asyncio as aioredis
    from redis.exceptions import AuthenticationError, RedisError, ResponseError

    shown = shown_url(settings.redis_url)
    try:
        r = aioredis.from_url(settings.redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    except ValueError as e:
        return f"SPACEBRIDGE_REDIS_URL is not usable ({e}); write redis://host:6379/0"
    try:
        await asyncio.wait_for(r.ping(), timeout_s + 1)
        return None
    except AuthenticationError:
        return f"Redis at {shown} refused the password: check SPACEBRIDGE_REDIS_URL"
    except ResponseError as e:
        return f"Redis at {shown} refused: {str(e)[:200]}; check SPACEBRIDGE_REDIS_URL"
    except (RedisError, OSError, TimeoutError) as e:
        why = str(e).splitlines()[0][:200] if str(e) else f"no answer within {timeout_s:g} s"
        return f"cannot reach Redis at {shown} ({why}): is it running? check SPACEBRIDGE_REDIS_URL"
    finally:
        try:
            await asyncio.wait_for(r.aclose(), 2)
        except Exception:
            pass


# ---- plugins and chat apps -----------------------------------------------------------------------
async def _plugins(settings: Settings) -> list[Check]:
    """Each installed plugin: importable here, and how it fared in the serving process last time."""
    from core.clock import SystemClock
    from core.kv import KeyValueStore
    from core.storage.engine import make_sessionmaker
    from plugins.api import Plugin
    from plugins.manager import STATUS_NS, discover, instantiate

    last: dict[str, dict[str, Any]] = {}
    try:
        engine = make_engine(settings.resolved_database_url(), connect_timeout_s=settings.database_connect_timeout_s,
                             statement_timeout_s=settings.database_statement_timeout_s)
        try:
            kv = KeyValueStore(make_sessionmaker(engine), SystemClock(), STATUS_NS)
            limit = settings.database_connect_timeout_s + settings.database_statement_timeout_s
            last = {e.value["name"]: e.value for e in await asyncio.wait_for(kv.scan("plugin:"), limit)}
        finally:
            await asyncio.wait_for(engine.dispose(), 5)
    except Exception:
        pass  # no database or no schema yet: the database check above says so
    out: list[Check] = []
    for ep in discover():
        name = f"plugin {ep.name}"
        if ep.name in settings.plugins_disabled:
            out.append({"name": name, "ok": False, "optional": True, "detail": "off (SPACEBRIDGE_PLUGINS_DISABLED)"})
            continue
        try:
            plugin = instantiate(ep.load())
            if not isinstance(plugin, Plugin):
                raise TypeError("not a plugin: needs name, version, setup(ctx), teardown()")
        except Exception as e:
            out.append({"name": name, "ok": False, "detail": f"{ep.value} cannot be loaded: {e!r}"[:300]})
            continue
        seen = last.get(ep.name)
        if seen is not None and seen.get("state") == "failed":
            out.append({"name": name, "ok": False, "detail": f"failed in serve at {seen.get('at', '?')[:19]}: "
                                                             f"{seen.get('error', '')}"[:300]})
        else:
            state = "loaded by serve" if seen else "importable (not served yet)"
            out.append({"name": name, "ok": True, "detail": f"{plugin.version} {state}"})
    return out


async def _telegram(settings: Settings) -> Check:
    """Ask Telegram who the token belongs to (getMe): proves the token and the network at once."""
    from telegram import Bot
    from telegram.error import InvalidToken, TelegramError

    assert settings.telegram_bot_token is not None
    try:
        bot = Bot(settings.telegram_bot_token.get_secret_value(), base_url=settings.telegram_api_base or
                  "https://api.telegram.org/bot")
        async with bot:
            me = await bot.get_me()
        return {"name": "telegram", "ok": True,
                "detail": f"token set; the bot is @{me.username} ({settings.telegram_mode})"}
    except InvalidToken:
        return {"name": "telegram", "ok": False,
                "detail": "Telegram refused TELEGRAM_BOT_TOKEN: check it with @BotFather"}
    except TelegramError as e:
        return {"name": "telegram", "ok": False, "detail": f"cannot reach the Telegram Bot API: {e}"}


async def _discord(settings: Settings) -> Check:
    """Ask Discord who the token belongs to (GET /users/@me), as discord.py's login does."""
    import aiohttp

    assert settings.discord_bot_token is not None
    base = (settings.discord_api_base or "https://discord.com/api/v10").rstrip("/")
    headers = {"Authorization": f"Bot {settings.discord_bot_token.get_secret_value().strip()}"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, \
                http.get(f"{base}/users/@me", headers=headers) as r:
            if r.status == 401:
                return {"name": "discord", "ok": False,
                        "detail": "Discord refused DISCORD_BOT_TOKEN: check it in the Developer Portal (Bot → Token)"}
            r.raise_for_status()
            me = await r.json()
    except (aiohttp.ClientError, TimeoutError) as e:
        return {"name": "discord", "ok": False, "detail": f"cannot reach Discord at {base}: {e}"}
    invite = (f"https://discord.com/oauth2/authorize?client_id={me.get('id')}&scope=bot+applications.commands"
              f"&permissions={DISCORD_PERMISSIONS}")
    return {"name": "discord", "ok": True,
            "detail": f"token set; the bot is {me.get('username')}; add it to a server: {invite}"}


async def database_problem_now(engine: AsyncEngine, timeout_s: float = 2.0) -> str | None:
    """None if the database answers and its schema is the code's; else what is wrong, in words."""
    try:
        async with asyncio.timeout(timeout_s):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            current = await migrate.current_revision(engine)
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except Exception as e:
        lines = str(e).strip().splitlines()
        return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__
    head = migrate.head_revision()
    if current != head:
        return f"schema {current or 'empty'}, the code needs {head}"
    return None
