"""Discord speakers heard when the Space's media lives in another process (issue 18).

Two processes on PostgreSQL and Redis, as docs/deploy.md splits them: a ``spacebridge serve --role
media`` process owns the Space's room, and this test's process runs the web and Discord roles (no
media) against the fake Discord and its fake voice server. A Stage member's 660 Hz tone, DAVE
encrypted by their own ``davey.DaveSession``, is decrypted by the bot here, forwarded to the owner
over ``/internal/media/{id}/speakers`` and mixed there: an aiortc web listener, whose media the owner
serves, hears it beside a web speaker's 440 Hz; the Stage hears the web speaker from the owner's
mix-minus, never the member's own voice.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
import redis.asyncio as aioredis

from adapters.discord.voice import OPUS_SILENCE
from adapters.discord.voice_rx import Receiver, StageVoiceClient
from adapters.webrtc.internal import INTERNAL_HEADER
from core.bus import redis_prefix
from core.clock import SystemClock
from spacebridge.app import Instance, stop
from tests.e2e.test_cli import ROOT, _env
from tests.e2e.test_multiprocess import LEASE_S, SECRET, Serve, offer_until_answered
from tests.integration.discord.conftest import make_dc
from tests.integration.discord.test_voice_rx import (
    HOST,
    MEMBER,
    approve,
    level_at,
    mixed,
    speak,
    ticks_until,
)
from tests.integration.webrtc.test_room_media import has, until_heard
from tests.integration.webrtc.test_signaling import connect
from tests.support.discord_fake import STAGE, TEXT, FakeDiscord, Mention
from tests.support.discord_voice_fake import AESGCM_MODE, XCHACHA
from tests.support.loopback import LOOPBACK, ensure_loopback_alias
from tests.support.services import REDIS_URL, create_pg_database, drop_pg_database, require

pytestmark = pytest.mark.slow


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A fresh PostgreSQL database at the schema head, and the environment a `serve` process needs."""
    require("postgresql")
    require("redis")
    ensure_loopback_alias()
    db = await asyncio.to_thread(create_pg_database)
    env = _env(tmp_path, SPACEBRIDGE_DATABASE_URL=db, SPACEBRIDGE_REDIS_URL=REDIS_URL, SPACEBRIDGE_SECRET_KEY=SECRET,
               SPACEBRIDGE_ICE_ANNOUNCE=f'["{LOOPBACK}"]', SPACEBRIDGE_MEDIA_LEASE_S=str(LEASE_S))
    up = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "spacebridge", "db", "upgrade"],
                                 cwd=ROOT, env=env, capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    try:
        yield db, env
    finally:
        await asyncio.to_thread(drop_pg_database, db)


def receiver(p: Instance) -> Receiver:
    """The bot's one voice connection's receiver."""
    clients = [s.client for s in p.discord._state.voice.values()] if p.discord else []
    assert len(clients) == 1 and isinstance(clients[0], StageVoiceClient) and clients[0].receiver is not None
    return clients[0].receiver


def stage_audio(packets: list[tuple[int, int, bytes]]) -> Any:
    """What the Stage hears: the bot's Opus packets (DAVE already removed by the fake), decoded to mono."""
    decoder: Any = av.CodecContext.create("libopus", "r")
    pcm = []
    for _, _, opus in packets:
        for frame in decoder.decode(av.Packet(opus)):
            pcm.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1))
    return np.concatenate(pcm)


async def test_a_stage_members_tone_is_mixed_by_the_media_process_and_not_played_back_to_the_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: tuple[str, dict[str, str]]) -> None:
    db, env = database
    owner = await Serve.start(env, tmp_path / "media.log", "media")
    fake = await FakeDiscord().start()
    fake.voice.dave_version, fake.voice.modes = 1, [AESGCM_MODE, XCHACHA]
    guild = fake.add_guild("Voice across processes")
    for uid, name in ((HOST, "Hana"), (MEMBER, "Mika")):
        fake.add_member(guild, uid, name)
    p = await make_dc(tmp_path, monkeypatch, fake, SystemClock(), database_url=db, redis_url=REDIS_URL,
                      roles=["web", "discord"], secret_key=SECRET, ice_announce=[LOOPBACK], media_lease_s=LEASE_S)
    talker: asyncio.Task[None] | None = None
    try:
        stage, text = fake.channel_of(guild, STAGE), fake.channel_of(guild, TEXT)
        await fake.reply(await fake.interact(guild, guild.owner_id, "spacebridge", "setup", {
            "stage_channel": Mention("channel", stage), "announce_channel": Mention("channel", text),
            "host_rule": "everyone"}))
        await fake.reply(await fake.interact(guild, HOST, "space", "start", {"title": "Across processes"}))
        space_id = (await p.core.list_spaces(states=("live",)))[0].id
        await asyncio.wait_for(fake.voice_ready.wait(), 20)
        assert fake.voice.session["dave"] == 1

        await fake.join_voice(guild, MEMBER, stage)
        member_acc = await approve(p, space_id, MEMBER)
        mika = await fake.voice.speaker(MEMBER, stage)
        assert mika.dave is not None and mika.dave.ready
        talker = asyncio.create_task(speak(fake, mika, 660))

        # the media process mixes the member (read here over its internal audio stream)
        try:
            await ticks_until(p.rooms.ticks(space_id), lambda w: mixed(w, member_acc))
        except AssertionError as e:  # say where the member's frames stopped
            bridge = next(iter(p.discord._state.voice.values())).bridge if p.discord else None
            raise AssertionError(f"{e}: receiver {receiver(p).stats}, bridge remote={bridge and bridge.remote} "
                                 f"members={bridge and list(bridge.members)}") from None
        # a frame sent while the bot's MLS group was still settling may fail; steady state has none
        failures = receiver(p).stats.decrypt_failures
        raw = await aioredis.from_url(REDIS_URL).get(redis_prefix(REDIS_URL) + f"media:space:{space_id}")
        assert raw is not None and owner.url.encode() in raw, "the media process does not serve the Space"
        assert space_id not in p.rooms.rooms, "the Discord process opened a room of its own"

        host_acc = await p.core.ensure_account("discord", str(HOST), "Hana")
        fan_acc = await p.core.ensure_account("web", "fan", "Fan")
        async with aiohttp.ClientSession() as http:
            speakers_url = f"{owner.url}/internal/media/{space_id}/speakers"
            async with http.get(speakers_url, params={"group": "discord:1"}) as r:
                assert r.status == 403  # only the instance's own processes may speak into a room
            async with http.get(speakers_url, headers={INTERNAL_HEADER: p.rooms.link.token()}) as r:
                assert r.status == 400 and "group" in await r.text()
            speaker = await connect(p, http, space_id, p.tokens.issue(space_id, host_acc.id, "speaker", p.core.now()),
                                    440)
            listener = await connect(p, http, space_id, p.tokens.issue(space_id, fan_acc.id, "listener",
                                                                       p.core.now()), None)
            for peer in (speaker, listener):
                await peer.recv("welcome", timeout=15)
                await offer_until_answered(peer)
            # the listener's media comes from the owner's room: the Discord member and the web speaker
            await until_heard(listener.client, lambda h: has(h, 660) and has(h, 440))

            # the Stage hears the owner's mix without its own member: the web speaker, not the tone
            # (the player's own silence frames, sent when the room's next packet is late, are left out:
            # their edges would smear the 440 Hz tone across the spectrum)
            start = len(fake.voice_packets)
            deadline = asyncio.get_running_loop().time() + 30
            while len(room := [q for q in fake.voice_packets[start + 50:] if q[2] != OPUS_SILENCE]) < 50:
                assert asyncio.get_running_loop().time() < deadline, "the bot stopped playing the room"
                await asyncio.sleep(0.1)
            audio = stage_audio(room[:50])
            assert level_at(audio, 440) > 0.5, "the Stage does not hear the web speaker"
            assert level_at(audio, 660) < 0.05, "the Stage hears its own member played back"
            for peer in (speaker, listener):
                await peer.client.pc.close()
                await peer.ws.close()
        assert fake.voice.dave_failures == 0
        stats = receiver(p).stats
        assert stats.decrypt_failures == failures and stats.packets > 100, stats
    finally:
        if talker is not None:
            talker.cancel()
        await stop(p)
        await fake.stop()
        await owner.stop()
