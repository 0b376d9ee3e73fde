"""A local Discord that the unmodified discord.py talks to over real HTTP, WebSocket and UDP.

It implements the parts of Discord's API v10 the adapter uses, the way Discord answers them:

* REST under ``/api/v10``: the bot user, ``/gateway/bot``, application commands, interaction
  callbacks and follow-ups, channel messages, DM channels, stage instances, voice states (``@me``
  and members), guild scheduled events and their interested users, member roles. Every call is
  recorded. Permissions are enforced from the guild's roles (403, code 50013), DMs to users who
  closed them fail (403, code 50007), and rate limits are Discord's: a global limit per second and
  per-route buckets announced with ``X-RateLimit-*`` headers, 429 with ``retry_after`` when broken.
* The gateway WebSocket: HELLO, IDENTIFY -> READY, GUILD_CREATE, heartbeats, sharding (IDENTIFY's
  ``shard: [id, count]``: a connection gets only guilds with ``(guild_id >> 22) % count == id`` and
  their events; events without a guild go to shard 0), voice state updates
  (op 4) answered with VOICE_STATE_UPDATE and VOICE_SERVER_UPDATE, and the dispatches a test
  scripts (INTERACTION_CREATE, VOICE_STATE_UPDATE, GUILD_SCHEDULED_EVENT_USER_ADD).
* A voice server: the voice WebSocket (v8, over TLS with a certificate made at start) and its UDP
  socket with IP discovery and ``aead_xchacha20_poly1305_rtpsize`` / ``aead_aes256_gcm_rtpsize``
  transport encryption, in ``discord_voice_fake.py``. Received RTP is decrypted and kept, so a test
  can decode the Opus the bot sent, and simulated members send theirs to the bot. Voice negotiates
  DAVE protocol version 0 (transport encryption only) unless a test sets ``voice.dave_version = 1``:
  then it is the MLS external sender and delivery service, members with their own ``davey`` sessions.
* Channels with permission overwrites (categories too; the bot's permissions in a channel are
  computed as Discord does), channel create/delete, stage instances one per channel, and members'
  voice: suppress and ``request_to_speak_timestamp`` on Stages, server mute (kept across channels,
  as on Discord), moves and disconnects (``PATCH /guilds/{id}/members/{id}``), each permission-checked
  in the channel. ``stage_moderate`` is a person using Discord's own Stage controls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import itertools
import json
import os
import ssl
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import WSMsgType, web

from tests.support.discord_voice_fake import FakeVoiceServer
from tests.support.stripe_fake import free_port

TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAx.fake.bot-token-for-tests"
APP_ID = 100000000000000001
BOT_ID = 100000000000000001

# permission bits (https://discord.com/developers/docs/topics/permissions)
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
EMBED_LINKS = 1 << 14
CONNECT = 1 << 20
SPEAK = 1 << 21
MUTE_MEMBERS = 1 << 22
DEAFEN_MEMBERS = 1 << 23
MOVE_MEMBERS = 1 << 24
MANAGE_ROLES = 1 << 28
REQUEST_TO_SPEAK = 1 << 32
MANAGE_EVENTS = 1 << 33
ALL = (1 << 51) - 1
EVERYONE_PERMS = VIEW_CHANNEL | SEND_MESSAGES | CONNECT | SPEAK | REQUEST_TO_SPEAK | EMBED_LINKS
BOT_PERMS = (VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | CONNECT | SPEAK | MUTE_MEMBERS | MOVE_MEMBERS
             | MANAGE_CHANNELS | MANAGE_EVENTS | MANAGE_ROLES)

TEXT, VOICE, CATEGORY, STAGE = 0, 2, 4, 13
_ids = itertools.count(200000000000000000)


def snowflake() -> int:
    return next(_ids)


def iso(t: float | None = None) -> str:
    return dt.datetime.fromtimestamp(time.time() if t is None else t, dt.UTC).isoformat()


@dataclass
class Call:
    method: str
    path: str
    body: Any
    status: int
    at: float
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class Guild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, dict[str, Any]] = field(default_factory=dict)
    channels: dict[int, dict[str, Any]] = field(default_factory=dict)
    members: dict[int, dict[str, Any]] = field(default_factory=dict)
    voice: dict[int, dict[str, Any]] = field(default_factory=dict)
    stages: dict[int, dict[str, Any]] = field(default_factory=dict)
    events: dict[int, dict[str, Any]] = field(default_factory=dict)
    interested: dict[int, set[int]] = field(default_factory=dict)

    @property
    def everyone(self) -> int:
        return self.id

    def perms(self, user_id: int, channel: int | None = None) -> int:
        """Discord's computation: the roles' bits, then (in ``channel``) its category's or its own
        overwrites: @everyone, then the member's roles (deny, then allow), then the member."""
        m = self.members.get(user_id)
        bits = int(self.roles[self.everyone]["permissions"])
        for r in (m or {}).get("roles", []):
            bits |= int(self.roles[int(r)]["permissions"])
        if bits & ADMINISTRATOR or user_id == self.owner_id:
            return ALL
        c = self.channels.get(channel) if channel is not None else None
        if c is None:
            return bits
        overwrites = {int(o["id"]): o for o in c.get("permission_overwrites", [])}

        def apply(ids: list[int], b: int) -> int:
            deny = allow = 0
            for i in ids:
                if i in overwrites:
                    deny |= int(overwrites[i]["deny"])
                    allow |= int(overwrites[i]["allow"])
            return (b & ~deny) | allow

        bits = apply([self.everyone], bits)
        bits = apply([int(r) for r in (m or {}).get("roles", [])], bits)
        return apply([user_id], bits)

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id), "name": self.name, "icon": None, "owner_id": str(self.owner_id), "features": [],
            "roles": list(self.roles.values()), "emojis": [], "stickers": [], "presences": [],
            "channels": list(self.channels.values()), "members": list(self.members.values()),
            "voice_states": [{k: v for k, v in s.items() if k != "member"} for s in self.voice.values()],
            "stage_instances": list(self.stages.values()), "guild_scheduled_events": list(self.events.values()),
            "threads": [], "member_count": len(self.members), "large": False, "unavailable": False,
            "joined_at": iso(), "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0, "premium_tier": 0,
            "preferred_locale": "en-US", "system_channel_flags": 0,
        }


class Denied(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def user(uid: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {"id": str(uid), "username": name, "global_name": name, "discriminator": "0", "avatar": None,
            "bot": bot}


class FakeDiscord:
    def __init__(self, *, global_per_s: int = 50, dm_open_per_s: int | None = None) -> None:
        self.token = TOKEN
        self.bot = user(BOT_ID, "Spacebridge", bot=True)
        self.users: dict[int, dict[str, Any]] = {BOT_ID: self.bot}
        self.guilds: dict[int, Guild] = {}
        self.calls: list[Call] = []
        self.messages: dict[int, dict[str, Any]] = {}
        self.dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self.dm_closed: set[int] = set()
        self.commands: list[dict[str, Any]] = []
        self.global_per_s = global_per_s
        self.buckets: dict[str, tuple[int, float]] = {}  # route -> (limit, per seconds)
        if dm_open_per_s is not None:
            self.buckets["POST /users/@me/channels"] = (dm_open_per_s, 1.0)
        self.forced_429: dict[str, float] = {}  # route -> retry_after, answered once
        self._global: deque[float] = deque()
        self._windows: dict[str, list[float]] = {}  # route -> [window start, requests in it]
        self.rate_limited: list[Call] = []
        self.gateways: list[web.WebSocketResponse] = []
        self.shards: dict[web.WebSocketResponse, tuple[int, int]] = {}  # connection -> (shard id, count)
        self.identified = asyncio.Event()
        self._seq = itertools.count(1)
        self._changed = asyncio.Condition()
        self.interactions: dict[int, dict[str, Any]] = {}
        self.responses: dict[int, list[dict[str, Any]]] = {}
        # voice
        self.voice = FakeVoiceServer(BOT_ID)
        self.voice_packets = self.voice.packets  # (ssrc, seq, opus) the bot sent
        self.voice_sessions = self.voice.sessions
        self.voice_ready = self.voice.ready
        self._runner: web.AppRunner | None = None
        self._voice_runner: web.AppRunner | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self.port = 0
        self.voice_port = 0
        self.udp_port = 0
        self.ca_file = ""
        self._tmp = tempfile.TemporaryDirectory()
        # OAuth2 (sign in with Discord): the registered client, codes, tokens, the consenting user
        self.oauth_secret = ""
        self.oauth_redirects: list[str] = []
        self.oauth_user: int | None = None
        self.oauth_codes: dict[str, dict[str, Any]] = {}
        self.oauth_tokens: dict[str, int] = {}
        self.oauth_requests: list[dict[str, str]] = []
        self.oauth_token_requests: list[dict[str, str]] = []

    # ---- life ---------------------------------------------------------------------------------
    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    async def start(self) -> FakeDiscord:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/oauth2/authorize", self._oauth_authorize)
        app.router.add_post("/api/oauth2/token", self._oauth_token)
        app.router.add_post("/api/v10/oauth2/token", self._oauth_token)
        app.router.add_get("/api/users/@me", self._oauth_me)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        vapp = web.Application()
        vapp.router.add_get("/", self._voice_ws)
        self._voice_runner = web.AppRunner(vapp, access_log=None)
        await self._voice_runner.setup()
        self.voice_port = free_port()
        await web.TCPSite(self._voice_runner, "127.0.0.1", self.voice_port, ssl_context=self._tls()).start()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _VoiceUDP(self), local_addr=("127.0.0.1", 0))
        self._udp = transport
        self.udp_port = self.voice.udp_port = transport.get_extra_info("sockname")[1]
        self.voice.transport = transport
        return self

    async def stop(self) -> None:
        for ws in list(self.gateways):
            await ws.close()
        if self._udp is not None:
            self._udp.close()
        for r in (self._runner, self._voice_runner):
            if r is not None:
                await r.cleanup()
        self._tmp.cleanup()

    def _tls(self) -> ssl.SSLContext:
        """A self-signed certificate for 127.0.0.1; the adapter trusts it through ``ca_file``."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-discord-voice")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        self.ca_file = os.path.join(self._tmp.name, "ca.pem")
        key_file = os.path.join(self._tmp.name, "key.pem")
        with open(self.ca_file, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_file, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.ca_file, key_file)
        return ctx

    # ---- the world ----------------------------------------------------------------------------
    def add_guild(self, name: str = "Test Guild", *, owner: int | None = None, bot_perms: int = BOT_PERMS,
                  stage: bool = True, gid: int | None = None) -> Guild:
        gid = gid or snowflake()
        owner_id = owner or snowflake()
        g = Guild(gid, name, owner_id)
        g.roles[gid] = self._role(gid, "@everyone", EVERYONE_PERMS, 0)
        bot_role = snowflake()
        g.roles[bot_role] = self._role(bot_role, "Spacebridge", bot_perms, 1, managed=True)
        self.add_channel(g, "general", TEXT)
        if stage:
            self.add_channel(g, "Stage", STAGE)
        self.guilds[gid] = g
        self.add_member(g, BOT_ID, "Spacebridge", roles=[bot_role])
        if owner_id not in self.users:
            self.add_member(g, owner_id, "Owner")
        return g

    @staticmethod
    def _role(rid: int, name: str, perms: int, position: int, managed: bool = False) -> dict[str, Any]:
        return {"id": str(rid), "name": name, "permissions": str(perms), "position": position, "color": 0,
                "hoist": False, "managed": managed, "mentionable": True, "flags": 0}

    @staticmethod
    def _channel(gid: int, name: str, kind: int) -> dict[str, Any]:
        cid = snowflake()
        c: dict[str, Any] = {"id": str(cid), "guild_id": str(gid), "name": name, "type": kind, "position": 0,
                             "permission_overwrites": [], "nsfw": False, "parent_id": None}
        if kind in (VOICE, STAGE):
            c.update(bitrate=64000, user_limit=0, rtc_region=None)
        return c

    def add_channel(self, g: Guild, name: str, kind: int, parent: int | None = None) -> int:
        c = self._channel(g.id, name, kind)
        c["parent_id"] = str(parent) if parent else None
        g.channels[int(c["id"])] = c
        return int(c["id"])

    async def overwrite(self, g: Guild, channel: int, target: int, *, allow: int = 0, deny: int = 0) -> None:
        """An admin sets a channel (or category) overwrite for a role (or @everyone: the guild id) or member."""
        kind = 0 if target in g.roles else 1
        rest = [o for o in g.channels[channel]["permission_overwrites"] if int(o["id"]) != target]
        g.channels[channel]["permission_overwrites"] = [*rest, {"id": str(target), "type": kind,
                                                                "allow": str(allow), "deny": str(deny)}]
        await self.dispatch("CHANNEL_UPDATE", g.channels[channel])

    async def role_permissions(self, g: Guild, role: int, perms: int) -> None:
        """An admin changes a role's permissions (Server Settings → Roles)."""
        g.roles[role]["permissions"] = str(perms)
        await self.dispatch("GUILD_ROLE_UPDATE", {"guild_id": str(g.id), "role": g.roles[role]})

    def bot_role(self, g: Guild) -> int:
        return next(rid for rid, r in g.roles.items() if r["managed"])

    def add_role(self, g: Guild, name: str, perms: int = 0) -> int:
        rid = snowflake()
        g.roles[rid] = self._role(rid, name, perms, len(g.roles))
        return rid

    def add_member(self, g: Guild, uid: int, name: str, roles: list[int] | None = None) -> dict[str, Any]:
        u = self.users.setdefault(uid, user(uid, name))
        m = {"user": u, "roles": [str(r) for r in roles or []], "joined_at": iso(), "deaf": False, "mute": False,
             "flags": 0, "nick": None}
        g.members[uid] = m
        return m

    def channel_of(self, g: Guild, kind: int) -> int:
        return next(cid for cid, c in g.channels.items() if c["type"] == kind)

    # ---- gateway ------------------------------------------------------------------------------
    @staticmethod
    def shard_of(guild_id: int, count: int) -> int:
        return (guild_id >> 22) % count

    def _receives(self, ws: web.WebSocketResponse, guild_id: Any) -> bool:
        sid, count = self.shards.get(ws, (0, 1))
        return sid == (self.shard_of(int(guild_id), count) if guild_id else 0)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        frame = json.dumps({"op": 0, "t": event, "s": next(self._seq), "d": data})
        for ws in list(self.gateways):
            if not ws.closed and self._receives(ws, data.get("guild_id")):
                await ws.send_str(frame)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            op, d = frame.get("op"), frame.get("d")
            if op == 1:
                await ws.send_json({"op": 11})
            elif op == 2:
                if d.get("token") != self.token:
                    await ws.close(code=4004, message=b"Authentication failed.")
                    break
                self.gateways.append(ws)
                sid, count = (int(x) for x in (d.get("shard") or [0, 1]))
                self.shards[ws] = (sid, count)
                mine = [g for g in self.guilds.values() if self.shard_of(g.id, count) == sid]
                ready = {"v": 10, "user": self.bot, "session_id": f"fake-session-{sid}", "shard": [sid, count],
                         "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
                         "guilds": [{"id": str(g.id), "unavailable": True} for g in mine],
                         "application": {"id": str(APP_ID), "flags": 0}, "private_channels": [],
                         "relationships": [], "presences": []}
                await ws.send_json({"op": 0, "t": "READY", "s": next(self._seq), "d": ready})
                for g in mine:
                    await ws.send_json({"op": 0, "t": "GUILD_CREATE", "s": next(self._seq), "d": g.payload()})
                self.identified.set()
            elif op == 4:
                await self._voice_state_request(d)
        if ws in self.gateways:
            self.gateways.remove(ws)
        self.shards.pop(ws, None)
        return ws

    async def _voice_state_request(self, d: dict[str, Any]) -> None:
        g = self.guilds[int(d["guild_id"])]
        channel = d.get("channel_id")
        state = self._set_voice(g, BOT_ID, int(channel) if channel else None, self_mute=d.get("self_mute", False),
                                self_deaf=d.get("self_deaf", False))
        await self.dispatch("VOICE_STATE_UPDATE", state)
        if channel:
            await self.dispatch("VOICE_SERVER_UPDATE", {"token": "voice-token", "guild_id": str(g.id),
                                                        "endpoint": f"127.0.0.1:{self.voice_port}"})

    def _set_voice(self, g: Guild, uid: int, channel: int | None, **changes: Any) -> dict[str, Any]:
        old = g.voice.get(uid)
        if channel is None:
            g.voice.pop(uid, None)
            base = dict(old or {})
            base.update(channel_id=None, guild_id=str(g.id), user_id=str(uid), member=g.members.get(uid),
                        session_id=(old or {}).get("session_id", f"s{uid}"))
            for k in ("deaf", "mute", "self_deaf", "self_mute", "self_video", "suppress"):
                base.setdefault(k, False)
            base.setdefault("request_to_speak_timestamp", None)
            return base
        kind = g.channels[channel]["type"]
        state = old if old is not None and old.get("channel_id") == str(channel) else {
            "guild_id": str(g.id), "channel_id": str(channel), "user_id": str(uid), "session_id": f"s{uid}",
            "deaf": False, "mute": bool((g.members.get(uid) or {}).get("mute")), "self_deaf": False,
            "self_mute": False, "self_video": False, "suppress": kind == STAGE, "request_to_speak_timestamp": None}
        state.update(changes)
        state["member"] = g.members.get(uid)
        g.voice[uid] = state
        return state

    async def join_voice(self, g: Guild, uid: int, channel: int) -> None:
        await self.dispatch("VOICE_STATE_UPDATE", self._set_voice(g, uid, channel))

    async def leave_voice(self, g: Guild, uid: int) -> None:
        await self.dispatch("VOICE_STATE_UPDATE", self._set_voice(g, uid, None))

    async def stage_moderate(self, g: Guild, uid: int, **changes: Any) -> None:
        """A stage moderator uses Discord's own controls on ``uid`` (``suppress=True``: Move to Audience;
        ``mute=True``: Server Mute), not through the bot: Discord tells every bot in a VOICE_STATE_UPDATE."""
        state = g.voice[uid]
        if "mute" in changes:
            g.members[uid]["mute"] = changes["mute"]
        await self.dispatch("VOICE_STATE_UPDATE", self._set_voice(g, uid, int(state["channel_id"]), **changes))

    async def request_to_speak(self, g: Guild, uid: int, on: bool = True) -> None:
        """The member taps "Request to Speak" on the Stage."""
        state = g.voice[uid]
        await self.dispatch("VOICE_STATE_UPDATE", self._set_voice(
            g, uid, int(state["channel_id"]), request_to_speak_timestamp=iso() if on else None))

    async def mark_interested(self, g: Guild, event_id: int, uid: int) -> None:
        g.interested.setdefault(event_id, set()).add(uid)
        await self.dispatch("GUILD_SCHEDULED_EVENT_USER_ADD", {
            "guild_scheduled_event_id": str(event_id), "user_id": str(uid), "guild_id": str(g.id)})

    async def interact(self, g: Guild, uid: int, command: str, sub: str | None = None,
                       options: dict[str, Any] | None = None, *, channel: int | None = None,
                       custom_id: str | None = None, message_id: int | None = None) -> int:
        """A member uses ``/command sub option:value`` (or clicks the button ``custom_id``)."""
        iid = snowflake()
        member = g.members[uid]
        perms = g.perms(uid)
        data: dict[str, Any]
        if custom_id is not None:
            kind = 3
            data = {"custom_id": custom_id, "component_type": 2}
        else:
            kind = 2
            opts = [{"name": k, "type": _option_type(v), "value": _option_value(v)}
                    for k, v in (options or {}).items()]
            if sub is not None:
                opts = [{"name": sub, "type": 1, "options": opts}]
            data = {"id": str(snowflake()), "name": command, "type": 1, "options": opts,
                    "resolved": self._resolved(g, options or {})}
        payload: dict[str, Any] = {
            "id": str(iid), "application_id": str(APP_ID), "type": kind, "data": data, "guild_id": str(g.id),
            "channel_id": str(channel or self.channel_of(g, TEXT)), "member": {**member, "permissions": str(perms)},
            "token": f"itoken-{iid}", "version": 1, "locale": "en-US", "guild_locale": "en-US",
            "app_permissions": str(g.perms(BOT_ID)), "entitlements": [], "authorizing_integration_owners": {},
            "context": 0, "attachment_size_limit": 10 * 1024 * 1024,
        }
        if message_id is not None:
            payload["message"] = self.messages[message_id]
        payload["channel"] = {"id": payload["channel_id"], "type": TEXT, "guild_id": str(g.id)}
        self.interactions[iid] = payload
        self.responses[iid] = []
        await self.dispatch("INTERACTION_CREATE", payload)
        return iid

    def _resolved(self, g: Guild, options: dict[str, Any]) -> dict[str, Any]:
        users, members, roles, channels = {}, {}, {}, {}
        for v in options.values():
            if isinstance(v, Mention) and v.kind == "user":
                users[str(v.id)] = self.users[v.id]
                if v.id in g.members:
                    members[str(v.id)] = {k: x for k, x in g.members[v.id].items() if k != "user"}
            elif isinstance(v, Mention) and v.kind == "role":
                roles[str(v.id)] = g.roles[v.id]
            elif isinstance(v, Mention) and v.kind == "channel":
                c = g.channels[v.id]
                channels[str(v.id)] = {**c, "permissions": str(g.perms(BOT_ID))}
        return {"users": users, "members": members, "roles": roles, "channels": channels}

    async def _until(self, look: Callable[[], Any], timeout: float, why: Callable[[], str]) -> Any:
        """Wait until ``look()`` returns something other than None, re-checking after every request."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._changed:
            while (found := look()) is None:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise TimeoutError(f"{why()}; last calls: "
                                       f"{[(c.method, c.path, c.status) for c in self.calls[-10:]]}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), left)
            return found

    async def reply(self, iid: int, timeout: float = 10.0, index: int = 0) -> dict[str, Any]:
        """The ``index``-th message the bot answered interaction ``iid`` with (callback or follow-up)."""
        def look() -> dict[str, Any] | None:
            msgs = [r for r in self.responses[iid] if r.get("content") is not None or r.get("embeds")]
            return msgs[index] if len(msgs) > index else None

        return dict(await self._until(look, timeout, lambda: f"no reply {index} to interaction {iid}: "
                                                            f"{self.responses[iid]}"))

    async def wait_for(self, pred: Callable[[Call], bool], timeout: float = 10.0, after: int = 0) -> Call:
        """The first successful call (from index ``after``) matching ``pred``."""
        def look() -> Call | None:
            return next((c for c in self.calls[after:] if c.status < 300 and pred(c)), None)

        found: Call = await self._until(look, timeout, lambda: f"no matching Discord call in {timeout}s")
        return found

    def find(self, method: str, prefix: str, after: int = 0) -> list[Call]:
        return [c for c in self.calls[after:] if c.method == method and c.path.startswith(prefix) and c.status < 300]

    # ---- REST ---------------------------------------------------------------------------------
    # ---- OAuth2 (https://discord.com/developers/docs/topics/oauth2) -----------------------------
    def oauth_app(self, client_secret: str, redirect_uris: list[str]) -> tuple[str, str]:
        """Register the application's OAuth2 client: (client id, client secret)."""
        self.oauth_secret, self.oauth_redirects = client_secret, list(redirect_uris)
        return str(APP_ID), client_secret

    def consent(self, uid: int | None) -> None:
        """Who the browser is signed in to Discord as, pressing Authorize (None: pressing Cancel)."""
        self.oauth_user = uid

    async def _oauth_authorize(self, request: web.Request) -> web.Response:
        """The consent page, simulated: an unknown client or redirect URI is an error page (Discord
        never redirects those); otherwise the redirect back with ``code`` or ``error=access_denied``."""
        q = request.query
        self.oauth_requests.append(dict(q))
        if q.get("client_id") != str(APP_ID) or q.get("redirect_uri") not in self.oauth_redirects:
            return web.Response(status=400, text="Invalid OAuth2 redirect_uri" if q.get("client_id") == str(APP_ID)
                                else "Unknown Application", content_type="text/plain")
        if q.get("response_type") != "code" or not set(q.get("scope", "").split()) <= {"identify", "email"}:
            return web.Response(status=400, text="Invalid scope or response_type", content_type="text/plain")
        back: dict[str, str] = {"state": q["state"]} if "state" in q else {}
        if self.oauth_user is None:
            back.update(error="access_denied",
                        error_description="The resource owner or authorization server denied the request")
        else:
            code = os.urandom(15).hex()
            self.oauth_codes[code] = {"user": self.oauth_user, "redirect_uri": q["redirect_uri"],
                                      "challenge": q.get("code_challenge"),
                                      "method": q.get("code_challenge_method", "plain"),
                                      "scope": q.get("scope", ""), "expires": time.monotonic() + 600}
            back["code"] = code
        sep = "&" if "?" in q["redirect_uri"] else "?"
        raise web.HTTPFound(q["redirect_uri"] + sep + "&".join(
            f"{k}={quote(v, safe='')}" for k, v in back.items()))

    async def _oauth_token(self, request: web.Request) -> web.Response:
        """``POST /oauth2/token``, form-encoded; the client authenticates with HTTP Basic or
        ``client_id``/``client_secret`` in the body. Codes work once, for 10 minutes, for the
        redirect URI and PKCE challenge they were issued with."""
        form = await request.post()
        f = {k: str(v) for k, v in form.items()}
        auth = request.headers.get("Authorization", "")
        client_id, secret = f.get("client_id", ""), f.get("client_secret", "")
        if auth.startswith("Basic "):
            try:
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                client_id = secret = ""

        def fail(status: int, error: str, description: str = "") -> web.Response:
            body = {"error": error, **({"error_description": description} if description else {})}
            return web.json_response(body, status=status)

        self.oauth_token_requests.append({**f, "client_id": client_id})
        if client_id != str(APP_ID) or not self.oauth_secret or secret != self.oauth_secret:
            return fail(401, "invalid_client")
        if f.get("grant_type") != "authorization_code":
            return fail(400, "unsupported_grant_type")
        grant = self.oauth_codes.pop(f.get("code", ""), None)
        if grant is None or grant["expires"] < time.monotonic():
            return fail(400, "invalid_grant", 'Invalid "code" in request.')
        if f.get("redirect_uri") != grant["redirect_uri"]:
            return fail(400, "invalid_grant", 'Invalid "redirect_uri" in request.')
        if grant["challenge"]:
            verifier = f.get("code_verifier", "")
            made = (base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                    if grant["method"] == "S256" else verifier)
            if not verifier or made != grant["challenge"]:
                return fail(400, "invalid_grant", 'Invalid "code_verifier" in request.')
        token = os.urandom(15).hex()
        self.oauth_tokens[token] = int(grant["user"])
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 604800,
                                  "refresh_token": os.urandom(15).hex(), "scope": grant["scope"]})

    async def _oauth_me(self, request: web.Request) -> web.Response:
        """``GET /users/@me`` with the person's bearer token."""
        auth = request.headers.get("Authorization", "")
        uid = self.oauth_tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if uid is None:
            return web.json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        return web.json_response(self.users.get(uid) or user(uid, f"user{uid}"))

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        if path == "/users/@me" and request.headers.get("Authorization", "").startswith("Bearer "):
            return await self._oauth_me(request)
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            if request.content_type == "application/json" and raw:
                body = json.loads(raw)
            elif request.content_type.startswith("multipart/"):
                body = {"multipart": True}
        call = Call(request.method, path, body, 200, time.monotonic(), dict(request.query))
        headers: dict[str, str] = {}
        try:
            if request.headers.get("Authorization") != f"Bot {self.token}" and not path.startswith(
                    ("/interactions/", "/webhooks/")):
                raise Denied(401, 0, "401: Unauthorized")
            self._rate_limit(call, headers)
            status, result = await self._route(call)
        except Denied as e:
            call.status = e.status
            status, result = e.status, {"message": e.message, "code": e.code}
            if e.status == 429:
                result = {"message": "You are being rate limited.", "retry_after": float(e.message),
                          "global": headers.get("X-RateLimit-Global") == "true"}
        call.status = status
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        if status == 204:
            return web.Response(status=204, headers=headers)
        # exactly "application/json", as Discord sends it: discord.py compares the header verbatim
        return web.Response(body=json.dumps(result).encode(), status=status,
                            headers={**headers, "Content-Type": "application/json"})

    def _route_key(self, call: Call) -> str:
        parts = call.path.strip("/").split("/")
        # keep the top-level resource and its id (Discord's "major parameters"), generalise the rest
        key = []
        for i, p in enumerate(parts):
            key.append(p if not p.isdigit() or i == 1 else "{id}")
        return f"{call.method} /" + "/".join(key)

    def _rate_limit(self, call: Call, headers: dict[str, str]) -> None:
        now = time.monotonic()
        key = self._route_key(call)
        forced = self.forced_429.pop(key, None)
        if forced is not None:
            headers.update({"Retry-After": str(forced), "X-RateLimit-Scope": "user"})
            self.rate_limited.append(call)
            raise Denied(429, 0, str(forced))
        if not call.path.startswith("/interactions/"):  # interaction callbacks are exempt from the global limit
            while self._global and now - self._global[0] >= 1.0:
                self._global.popleft()
            if len(self._global) >= self.global_per_s:
                retry = round(1.0 - (now - self._global[0]), 3)
                headers.update({"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global",
                                "Retry-After": str(retry)})
                self.rate_limited.append(call)
                raise Denied(429, 0, str(retry))
            self._global.append(now)
        rule = self.buckets.get(f"{call.method} {call.path}") or self.buckets.get(key)
        if rule is None:
            return
        limit, per = rule
        # Discord's buckets are fixed windows: the first request opens one, and all of it resets at once
        window = self._windows.get(key)
        if window is None or now >= window[0] + per:
            window = self._windows[key] = [now, 0]
        reset_after = window[0] + per - now
        headers.update({"X-RateLimit-Limit": str(limit), "X-RateLimit-Bucket": f"b-{abs(hash(key)) % 10**8}",
                        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}"})
        if window[1] >= limit:
            headers.update({"X-RateLimit-Remaining": "0", "X-RateLimit-Scope": "user",
                            "Retry-After": f"{reset_after:.3f}"})
            self.rate_limited.append(call)
            raise Denied(429, 0, f"{reset_after:.3f}")
        window[1] += 1
        headers["X-RateLimit-Remaining"] = str(limit - int(window[1]))

    def _need(self, g: Guild, *bits: int, channel: int | None = None) -> None:
        have = g.perms(BOT_ID, channel)
        if any(not have & b for b in bits):
            raise Denied(403, 50013, "Missing Permissions")

    async def _route(self, call: Call) -> tuple[int, Any]:
        m, p, b = call.method, call.path.rstrip("/"), call.body or {}
        parts = p.strip("/").split("/")
        if (m, p) == ("GET", "/users/@me"):
            return 200, self.bot
        if (m, p) == ("GET", "/gateway/bot"):
            return 200, {"url": f"ws://127.0.0.1:{self.port}/gateway", "shards": 1,
                         "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0,
                                                 "max_concurrency": 1}}
        if m == "GET" and p in ("/oauth2/applications/@me", "/applications/@me"):
            return 200, {"id": str(APP_ID), "name": "Spacebridge", "icon": None, "description": "",
                         "bot_public": True, "bot_require_code_grant": False, "verify_key": "0" * 64,
                         "owner": user(BOT_ID + 1, "owner"), "team": None, "flags": 0, "summary": "",
                         "bot": self.bot}
        if (m, p) == ("GET", "/gateway"):
            return 200, {"url": f"ws://127.0.0.1:{self.port}/gateway"}
        if parts[0] == "applications" and parts[-1] == "commands" and m == "PUT":
            self.commands = [{**c, "id": str(snowflake()), "application_id": str(APP_ID), "version": "1",
                              "default_member_permissions": c.get("default_member_permissions"), "type": 1}
                             for c in b]
            return 200, self.commands
        if parts[0] == "applications" and parts[-1] == "commands" and m == "GET":
            return 200, self.commands
        if parts[0] == "interactions" and parts[-1] == "callback":
            iid = int(parts[1])
            if iid not in self.interactions or parts[2] != self.interactions[iid]["token"]:
                raise Denied(404, 10062, "Unknown interaction")
            if any(r.get("_callback") for r in self.responses[iid]):
                raise Denied(400, 40060, "Interaction has already been acknowledged.")
            data = b.get("data") or {}
            msg = self._message(int(self.interactions[iid]["channel_id"]), data)
            self.responses[iid].append({**data, "_callback": b.get("type"), "id": msg["id"]})
            return 200, {"interaction": {"id": str(iid), "type": self.interactions[iid]["type"],
                                         "response_message_id": msg["id"],
                                         "response_message_loading": b.get("type") == 5,
                                         "response_message_ephemeral": bool(data.get("flags", 0) & 64)},
                         "resource": {"type": b.get("type"), "message": msg} if b.get("type") in (4, 7) else None}
        if parts[0] == "webhooks" and len(parts) >= 3:
            iid = int(parts[2].removeprefix("itoken-"))
            if m == "POST" or (m == "PATCH" and parts[-1] == "@original"):
                msg = self._message(int(self.interactions[iid]["channel_id"]), b)
                self.responses[iid].append({**b, "id": msg["id"]})
                return 200, msg
            if m == "PATCH":
                msg = self.messages[int(parts[-1])]
                msg.update({k: v for k, v in b.items() if k in ("content", "embeds", "components")})
                self.responses[iid].append({**b, "id": msg["id"]})
                return 200, msg
            return 204, None
        if parts[0] == "users" and p == "/users/@me/channels" and m == "POST":
            uid = int(b["recipient_id"])
            cid = self.dm_channels.setdefault(uid, snowflake())
            return 200, {"id": str(cid), "type": 1, "recipients": [self.users.get(uid, user(uid, str(uid)))],
                         "last_message_id": None}
        if parts[0] == "channels" and len(parts) >= 3 and parts[2] == "messages":
            cid = int(parts[1])
            dm_user = next((u for u, c in self.dm_channels.items() if c == cid), None)
            if dm_user is not None and dm_user in self.dm_closed:
                raise Denied(403, 50007, "Cannot send messages to this user")
            g = self._guild_of_channel(cid)
            if g is not None:
                self._need(g, VIEW_CHANNEL, SEND_MESSAGES, *((EMBED_LINKS,) if b.get("embeds") else ()))
            if m == "POST" and len(parts) == 3:
                return 200, self._message(cid, b)
            if m == "PATCH" and len(parts) == 4:
                edited = self.messages.get(int(parts[3]))
                if edited is None:
                    raise Denied(404, 10008, "Unknown Message")
                msg = edited
                msg.update({k: v for k, v in b.items() if k in ("content", "embeds", "components")})
                msg["edited_timestamp"] = iso()
                return 200, msg
        if parts[0] == "stage-instances":
            return await self._stage_route(m, parts, b)
        if parts[0] == "channels" and len(parts) == 2 and m == "DELETE":
            return await self._delete_channel(int(parts[1]))
        if parts[0] == "guilds" and len(parts) >= 3:
            g = self.guilds[int(parts[1])]
            if parts[2] == "voice-states":
                return await self._voice_route(g, parts[3], b)
            if parts[2] == "scheduled-events":
                return await self._event_route(g, m, parts, b, call.query)
            if parts[2] == "members" and len(parts) == 6 and parts[4] == "roles":
                self._need(g, MANAGE_ROLES)
                uid, rid = int(parts[3]), parts[5]
                roles = g.members[uid]["roles"]
                if m == "PUT" and rid not in roles:
                    roles.append(rid)
                elif m == "DELETE" and rid in roles:
                    roles.remove(rid)
                await self.dispatch("GUILD_MEMBER_UPDATE", {**g.members[uid], "guild_id": str(g.id)})
                return 204, None
            if parts[2] == "channels" and len(parts) == 3 and m == "POST":
                return await self._create_channel(g, b)
            if parts[2] == "members" and len(parts) == 4 and m == "PATCH":
                return await self._edit_member(g, int(parts[3]), b)
            if parts[2] == "members" and len(parts) == 4 and m == "GET":
                mem = g.members.get(int(parts[3]))
                if mem is None:
                    raise Denied(404, 10007, "Unknown Member")
                return 200, mem
        raise Denied(404, 0, f"404: Not Found ({m} {p})")

    def _guild_of_channel(self, cid: int) -> Guild | None:
        return next((g for g in self.guilds.values() if cid in g.channels), None)

    def _message(self, cid: int, b: dict[str, Any]) -> dict[str, Any]:
        mid = snowflake()
        g = self._guild_of_channel(cid)
        msg = {"id": str(mid), "channel_id": str(cid), "author": self.bot, "content": b.get("content") or "",
               "embeds": b.get("embeds") or [], "components": b.get("components") or [],
               "timestamp": iso(), "edited_timestamp": None, "tts": False, "mention_everyone": False,
               "mentions": [], "mention_roles": [], "attachments": [], "pinned": False, "type": 0,
               "flags": b.get("flags", 0), "allowed_mentions": b.get("allowed_mentions")}
        if g is not None:
            msg["guild_id"] = str(g.id)
        self.messages[mid] = msg
        return msg

    async def _stage_route(self, m: str, parts: list[str], b: dict[str, Any]) -> tuple[int, Any]:
        cid = int(b["channel_id"]) if m == "POST" else int(parts[1])
        g = self._guild_of_channel(cid)
        if g is None:
            raise Denied(404, 10003, "Unknown Channel")
        self._need(g, MANAGE_CHANNELS, MUTE_MEMBERS, MOVE_MEMBERS, channel=cid)
        if m == "POST":
            if cid in g.stages:
                raise Denied(400, 150006, "A stage instance already exists for this channel")
            inst = {"id": str(snowflake()), "guild_id": str(g.id), "channel_id": str(cid), "topic": b["topic"],
                    "privacy_level": b.get("privacy_level", 2), "discoverable_disabled": True,
                    "guild_scheduled_event_id": b.get("guild_scheduled_event_id"),
                    "send_start_notification": b.get("send_start_notification", False)}
            g.stages[cid] = inst
            await self.dispatch("STAGE_INSTANCE_CREATE", inst)
            return 200, inst
        found = g.stages.get(cid)
        if found is None:
            raise Denied(404, 10067, "Unknown Stage Instance")
        inst = found
        if m == "GET":
            return 200, inst
        if m == "PATCH":
            inst.update({k: v for k, v in b.items() if k in ("topic", "privacy_level")})
            await self.dispatch("STAGE_INSTANCE_UPDATE", inst)
            return 200, inst
        del g.stages[cid]
        await self.dispatch("STAGE_INSTANCE_DELETE", inst)
        return 204, None

    async def _create_channel(self, g: Guild, b: dict[str, Any]) -> tuple[int, Any]:
        parent = int(b["parent_id"]) if b.get("parent_id") else None
        self._need(g, MANAGE_CHANNELS, channel=parent)
        if parent is not None and g.channels.get(parent, {}).get("type") != CATEGORY:
            raise Denied(400, 50035, "Invalid Form Body (parent_id is not a category)")
        c = self._channel(g.id, str(b["name"])[:100], int(b.get("type", TEXT)))
        c["parent_id"] = str(parent) if parent else None
        if parent is not None:  # a new channel starts synced with its category's permissions
            c["permission_overwrites"] = [dict(o) for o in g.channels[parent]["permission_overwrites"]]
        g.channels[int(c["id"])] = c
        await self.dispatch("CHANNEL_CREATE", c)
        return 200, c

    async def _delete_channel(self, cid: int) -> tuple[int, Any]:
        g = self._guild_of_channel(cid)
        if g is None:
            raise Denied(404, 10003, "Unknown Channel")
        self._need(g, MANAGE_CHANNELS, channel=cid)
        for uid, state in list(g.voice.items()):  # everyone in it is disconnected
            if state["channel_id"] == str(cid):
                await self.dispatch("VOICE_STATE_UPDATE", self._set_voice(g, uid, None))
        g.stages.pop(cid, None)
        c = g.channels.pop(cid)
        await self.dispatch("CHANNEL_DELETE", c)
        return 200, c

    async def _edit_member(self, g: Guild, uid: int, b: dict[str, Any]) -> tuple[int, Any]:
        """Server mute/deafen and moving or disconnecting a member's voice (PATCH /members/{id})."""
        mem = g.members.get(uid)
        if mem is None:
            raise Denied(404, 10007, "Unknown Member")
        state = g.voice.get(uid)
        voice = {k: b[k] for k in ("mute", "deaf", "channel_id") if k in b}
        if voice and state is None:
            raise Denied(400, 40032, "Target user is not connected to voice.")
        here = int(state["channel_id"]) if state else None
        if "mute" in voice:
            self._need(g, MUTE_MEMBERS, channel=here)
        if "deaf" in voice:
            self._need(g, DEAFEN_MEMBERS, channel=here)
        if "channel_id" in voice:
            self._need(g, MOVE_MEMBERS, channel=here)
        mem.update({k: voice[k] for k in ("mute", "deaf") if k in voice})
        if voice:
            target = voice.get("channel_id", here)
            changes = {k: voice[k] for k in ("mute", "deaf") if k in voice}
            await self.dispatch("VOICE_STATE_UPDATE", self._set_voice(g, uid, int(target) if target else None,
                                                                      **changes))
        await self.dispatch("GUILD_MEMBER_UPDATE", {**mem, "guild_id": str(g.id)})
        return 200, mem

    async def _voice_route(self, g: Guild, who: str, b: dict[str, Any]) -> tuple[int, Any]:
        uid = BOT_ID if who == "@me" else int(who)
        state = g.voice.get(uid)
        if state is None or (b.get("channel_id") and state["channel_id"] != str(b["channel_id"])):
            raise Denied(400, 10065, "Unknown Voice State")
        if uid != BOT_ID or b.get("suppress") is False:
            self._need(g, MUTE_MEMBERS, channel=int(state["channel_id"]))
        changes = {k: b[k] for k in ("suppress", "request_to_speak_timestamp") if k in b}
        if changes.get("suppress") is False:
            changes.setdefault("request_to_speak_timestamp", None)
        await self.dispatch("VOICE_STATE_UPDATE", self._set_voice(g, uid, int(state["channel_id"]), **changes))
        return 204, None

    async def _event_route(self, g: Guild, m: str, parts: list[str], b: dict[str, Any],
                           query: dict[str, str]) -> tuple[int, Any]:
        if len(parts) == 5 and parts[4] == "users":
            eid = int(parts[3])
            uids = sorted(g.interested.get(eid, set()))
            after = int(query.get("after", 0))
            limit = int(query.get("limit", 100))
            page = [u for u in uids if u > after][:limit]
            return 200, [{"guild_scheduled_event_id": str(eid), "user": self.users[u]} for u in page]
        self._need(g, MANAGE_EVENTS)
        if m == "POST":
            if b.get("entity_type") == 1 and int(b["channel_id"]) not in g.channels:
                raise Denied(400, 50035, "Invalid Form Body")
            eid = snowflake()
            ev = {"id": str(eid), "guild_id": str(g.id), "channel_id": b.get("channel_id"),
                  "creator_id": str(BOT_ID), "creator": self.bot, "name": b["name"],
                  "description": b.get("description"), "scheduled_start_time": b["scheduled_start_time"],
                  "scheduled_end_time": b.get("scheduled_end_time"), "privacy_level": b.get("privacy_level", 2),
                  "status": 1, "entity_type": b["entity_type"], "entity_id": None,
                  "entity_metadata": b.get("entity_metadata"), "user_count": 0, "image": None}
            g.events[eid] = ev
            await self.dispatch("GUILD_SCHEDULED_EVENT_CREATE", ev)
            return 200, ev
        eid = int(parts[3])
        event = g.events.get(eid)
        if event is None:
            raise Denied(404, 10070, "Unknown Guild Scheduled Event")
        ev = event
        if m == "PATCH":
            order = {1: {2, 4}, 2: {3}, 3: set(), 4: set()}
            if "status" in b and b["status"] != ev["status"] and b["status"] not in order[ev["status"]]:
                raise Denied(400, 180000, "Cannot update event status")
            ev.update({k: v for k, v in b.items() if k in ("name", "description", "scheduled_start_time",
                                                           "scheduled_end_time", "status", "channel_id")})
            await self.dispatch("GUILD_SCHEDULED_EVENT_UPDATE", ev)
            return 200, ev
        if m == "GET":
            return 200, ev
        del g.events[eid]
        await self.dispatch("GUILD_SCHEDULED_EVENT_DELETE", ev)
        return 204, None

    # ---- voice --------------------------------------------------------------------------------
    async def _voice_ws(self, request: web.Request) -> web.WebSocketResponse:
        return await self.voice.ws(request, "voice-token")

    def on_udp(self, data: bytes, addr: tuple[str, int], transport: asyncio.DatagramTransport) -> None:
        self.voice.on_udp(data, addr, transport)


class _VoiceUDP(asyncio.DatagramProtocol):
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.fake.on_udp(data, addr, self.transport)


@dataclass(frozen=True)
class Mention:
    """An option value that is a Discord object (user, role, channel)."""

    kind: str
    id: int


def _option_type(v: Any) -> int:
    if isinstance(v, Mention):
        return {"user": 6, "channel": 7, "role": 8}[v.kind]
    if isinstance(v, bool):
        return 5
    if isinstance(v, int):
        return 4
    return 3


def _option_value(v: Any) -> Any:
    return str(v.id) if isinstance(v, Mention) else v
