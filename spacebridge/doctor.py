"""``spacebridge doctor``: one line per thing that must work, and what to do when it does not."""

from __future__ import annotations

from typing import Any

from core.storage import migrate
from core.storage.engine import make_engine
from spacebridge.config import Settings

# View Channel, Send Messages, Embed Links, Connect, Speak, Mute Members, Move Members, Manage Channels,
# Manage Roles (ticket role), Manage Events (scheduled Spaces): what the Discord adapter asks for.
DISCORD_PERMISSIONS = 8_882_506_768


async def run_checks(settings: Settings) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = [{"name": "config", "ok": True, "detail": "valid"}]
    url = settings.resolved_database_url()
    shown = url.split("@")[-1]
    engine = make_engine(url)
    try:
        current = await migrate.current_revision(engine)
        head = migrate.head_revision()
        if current == head:
            checks.append({"name": "database", "ok": True, "detail": f"{shown} at schema {head}"})
        elif engine.dialect.name == "sqlite":
            checks.append({"name": "database", "ok": True,
                           "detail": f"{shown} at schema {current or 'empty'}; serve upgrades it to {head}"})
        else:
            checks.append({"name": "database", "ok": False, "detail": f"{shown} at schema {current or 'empty'}, "
                           f"needs {head}: run `spacebridge db upgrade`"})
    except Exception as e:
        checks.append({"name": "database", "ok": False, "detail": f"cannot connect to {shown}: {e}"})
    finally:
        await engine.dispose()
    if settings.redis_url:
        try:
            import redis.asyncio as aioredis

            r = aioredis.from_url(settings.redis_url)
            await r.ping()
            await r.aclose()
            checks.append({"name": "redis", "ok": True, "detail": f"{settings.redis_url} answers"})
        except Exception as e:
            checks.append({"name": "redis", "ok": False, "detail": f"{settings.redis_url}: {e}"})
    else:
        checks.append({"name": "redis", "ok": False, "optional": True,
                       "detail": "not set: events stay in this process (set SPACEBRIDGE_REDIS_URL for several)"})
    for name, value, env in (("discord", settings.discord_bot_token, "DISCORD_BOT_TOKEN"),
                             ("telegram", settings.telegram_bot_token, "TELEGRAM_BOT_TOKEN")):
        if not (value and value.get_secret_value().strip()):
            checks.append({"name": name, "ok": False, "optional": True, "detail": f"off: set {env} to enable"})
        elif name == "telegram":
            checks.append(await _telegram(settings))
        else:
            checks.append(await _discord(settings))
    checks.extend(await _plugins(settings))
    if settings.ticketing_enabled:
        checks.append({"name": "ticketing", "ok": True, "detail": "Stripe keys set"})
    else:
        checks.append({"name": "ticketing", "ok": False, "optional": True,
                       "detail": "off: set STRIPE_API_KEY and STRIPE_WEBHOOK_SECRET to sell tickets"})
    return checks


async def _plugins(settings: Settings) -> list[dict[str, Any]]:
    """Each installed plugin: importable here, and how it fared in the serving process last time."""
    from core.clock import SystemClock
    from core.kv import KeyValueStore
    from core.storage.engine import make_sessionmaker
    from plugins.api import Plugin
    from plugins.manager import STATUS_NS, discover, instantiate

    last: dict[str, dict[str, Any]] = {}
    engine = make_engine(settings.resolved_database_url())
    try:
        kv = KeyValueStore(make_sessionmaker(engine), SystemClock(), STATUS_NS)
        last = {e.value["name"]: e.value for e in await kv.scan("plugin:")}
    except Exception:
        pass  # no schema yet: the database check above says so
    finally:
        await engine.dispose()
    out: list[dict[str, Any]] = []
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


async def _telegram(settings: Settings) -> dict[str, Any]:
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


async def _discord(settings: Settings) -> dict[str, Any]:
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
