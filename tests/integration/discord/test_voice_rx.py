"""Discord voice both ways: a Stage member's voice is mixed into the Space like a web speaker's, and the
Stage hears the room without its own members (mix-minus).

The bot joins through discord.py's real voice client; the fake voice server speaks DAVE protocol
version 1 (MLS external sender: real key packages, signed external Add proposals, the bot's commit and
welcome) and the simulated member encrypts its Opus with its own ``davey.DaveSession``; the version-0
path (transport encryption only) is tested too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from adapters.discord.voice_rx import StageVoiceClient
from adapters.webrtc.room import OpusEncoder
from core.clock import Clock, FrozenClock
from core.errors import DomainError
from core.model.accounts import Actor
from core.ports import FRAME_SAMPLES, SAMPLE_RATE, AudioTick
from spacebridge.app import Instance, stop
from tests.integration.discord.conftest import make_dc
from tests.integration.webrtc.test_room_media import has, until_heard
from tests.integration.webrtc.test_signaling import connect
from tests.support.discord_fake import STAGE, TEXT, FakeDiscord, Guild, Mention
from tests.support.discord_voice_fake import AESGCM_MODE, XCHACHA, Member
from tests.support.loopback import LOOPBACK, ensure_loopback_alias

HOST, MEMBER, STRANGER = 300000000000000031, 300000000000000032, 300000000000000033


def tone_packets(hz: float, n: int) -> list[bytes]:
    """``n`` 20 ms Opus frames of a tone, as a Discord client would send them."""
    enc = OpusEncoder()
    t = np.arange(n * FRAME_SAMPLES) / SAMPLE_RATE
    pcm = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)
    return [bytes(p) for i in range(n) for p in enc.encode(pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES], i)]


def level_at(pcm: Any, hz: float) -> float:
    """Spectrum magnitude near ``hz`` relative to the strongest peak between 100 Hz and 2 kHz."""
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    freqs = np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)
    band = (freqs > 100) & (freqs < 2000)
    near = np.abs(freqs - hz) < 15
    return float(spec[near].max() / spec[band].max())


async def speak(fake: FakeDiscord, member: Member, hz: float) -> None:
    """The member talks for as long as the test needs (paced like a real client, 50 frames a second)."""
    frames = tone_packets(hz, 50)
    loop = asyncio.get_running_loop()
    due, i = loop.time(), 0
    while True:
        fake.voice.send(member, frames[i % len(frames)])
        i += 1
        due += 0.02
        await asyncio.sleep(max(0.0, due - loop.time()))


async def ticks_until(it: AsyncIterator[AudioTick], ok: Any, limit: int = 1500) -> list[AudioTick]:
    """Room ticks (20 ms each) until ``ok(window)`` holds for the last 25 of them; fails after ``limit``."""
    seen: list[AudioTick] = []
    async for tick in it:
        seen.append(tick)
        if len(seen) >= 25 and ok(seen[-25:]):
            return seen
        assert len(seen) < limit, "the room never got there"
    raise AssertionError("the room closed")


async def on_air(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dave: int, modes: list[str],
                 clock: Clock | None = None) -> tuple[FakeDiscord, Guild, Instance, str]:
    """A Space live on the guild's Stage with the bot in its voice (a browser needs the real ``clock``:
    the page checks its join token's expiry against its own time)."""
    ensure_loopback_alias()
    fake = await FakeDiscord().start()
    fake.voice.dave_version, fake.voice.modes = dave, modes
    guild = fake.add_guild("Voice both ways")
    for uid, name in ((HOST, "Hana"), (MEMBER, "Mika"), (STRANGER, "Sten")):
        fake.add_member(guild, uid, name)
    p = await make_dc(tmp_path, monkeypatch, fake, clock or FrozenClock(), ice_announce=[LOOPBACK])
    stage, text = fake.channel_of(guild, STAGE), fake.channel_of(guild, TEXT)
    await fake.reply(await fake.interact(guild, guild.owner_id, "spacebridge", "setup", {
        "stage_channel": Mention("channel", stage), "announce_channel": Mention("channel", text),
        "host_rule": "everyone"}))
    await fake.reply(await fake.interact(guild, HOST, "space", "start", {"title": "Both ways"}))
    space = (await p.core.list_spaces(states=("live",)))[0]
    await asyncio.wait_for(fake.voice_ready.wait(), 20)
    return fake, guild, p, space.id


async def approve(p: Instance, space_id: str, uid: int) -> str:
    """The member (whose Stage presence the bot is joining to the Space) raises a hand; the host approves."""
    acc = await p.core.ensure_account("discord", str(uid), "")
    host = await p.core.ensure_account("discord", str(HOST), "Hana")
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        try:
            await p.core.raise_hand(Actor(account_id=acc.id, platform="discord"), space_id)
            break
        except DomainError:  # their Stage presence has not reached the core yet
            assert asyncio.get_running_loop().time() < deadline, "the member never joined the Space"
            await asyncio.sleep(0.05)
    await p.core.approve(Actor(account_id=host.id, platform="discord"), space_id, acc.id)
    return str(acc.id)


def mixed(window: list[AudioTick], pid: str) -> bool:
    return all(pid in t.speakers for t in window)


@pytest.mark.slow
async def test_a_dave_members_voice_is_heard_on_the_web_and_not_played_back_to_the_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, guild, p, space_id = await on_air(tmp_path, monkeypatch, 1, [AESGCM_MODE, XCHACHA])
    talkers: list[asyncio.Task[None]] = []
    try:
        assert fake.voice.session["mode"] == AESGCM_MODE and fake.voice.session["dave"] == 1
        stage = fake.channel_of(guild, STAGE)
        await fake.join_voice(guild, MEMBER, stage)
        await fake.join_voice(guild, STRANGER, stage)  # on the Stage, never approved on the core's stage
        member_acc = await approve(p, space_id, MEMBER)
        mika = await fake.voice.speaker(MEMBER, stage)
        sten = await fake.voice.speaker(STRANGER, stage)
        assert mika.dave is not None and mika.dave.ready, "the member is in the bot's MLS group"
        talkers += [asyncio.create_task(speak(fake, mika, 660)), asyncio.create_task(speak(fake, sten, 880))]
        stranger_acc = (await p.core.ensure_account("discord", str(STRANGER), "Sten")).id

        host_acc = await p.core.ensure_account("discord", str(HOST), "Hana")
        fan_acc = await p.core.ensure_account("web", "fan", "Fan")
        async with aiohttp.ClientSession() as http:
            speaker = await connect(p, http, space_id, p.tokens.issue(space_id, host_acc.id, "speaker", p.core.now()),
                                    440)
            listener = await connect(p, http, space_id, p.tokens.issue(space_id, fan_acc.id, "listener",
                                                                       p.core.now()), None)
            for peer in (speaker, listener):
                await peer.recv("welcome")
                await peer.media()
            # the web listener hears the Discord member and the web speaker; the stranger is not mixed
            heard = await until_heard(listener.client, lambda h: has(h, 660) and has(h, 440))
            assert not has(heard, 880)
            # captions and recording read the same ticks: the member's own frame, and the mix
            window = (await ticks_until(p.rooms.ticks(space_id), lambda w: mixed(w, member_acc)))[-25:]
            assert all(stranger_acc not in t.speakers for t in window)
            mix = np.concatenate([t.mix for t in window])
            assert level_at(mix, 660) > 0.3 and level_at(mix, 880) < 0.05
            voice = np.concatenate([t.speakers[member_acc] for t in window])
            assert abs(level_at(voice, 660) - 1.0) < 1e-9

            # what the bot plays to the Stage (DAVE-decrypted by the member's own session): the web
            # speaker, never the member's own voice
            start = len(fake.voice_packets)
            deadline = asyncio.get_running_loop().time() + 30
            while len(fake.voice_packets) < start + 100:
                assert asyncio.get_running_loop().time() < deadline, "the bot stopped playing"
                await asyncio.sleep(0.1)
            decoder: Any = av.CodecContext.create("libopus", "r")
            pcm = []
            for _, _, opus in fake.voice_packets[start + 50:start + 100]:
                for frame in decoder.decode(av.Packet(opus)):
                    pcm.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1))
            stage_audio = np.concatenate(pcm)
            assert level_at(stage_audio, 440) > 0.5, "the Stage does not hear the web speaker"
            assert level_at(stage_audio, 660) < 0.05, "the Stage hears its own member played back"
            assert fake.voice.dave_failures == 0

            # muted by the core: silent in the room at once (the mute reaches the room before any client)
            await p.core.mute(Actor(account_id=host_acc.id, platform="discord"), space_id, member_acc)
            await ticks_until(p.rooms.ticks(space_id), lambda w: all(member_acc not in t.speakers for t in w))
            await until_heard(listener.client, lambda h: has(h, 440) and not has(h, 660))
            for peer in (speaker, listener):
                await peer.client.pc.close()
                await peer.ws.close()
        source = p.discord.voice_source(guild.id) if p.discord else None
        assert source is not None and source.played > 50
        clients = [s.client for s in p.discord._state.voice.values()] if p.discord else []
        assert len(clients) == 1 and isinstance(clients[0], StageVoiceClient) and clients[0].receiver is not None
        stats = clients[0].receiver.stats
        assert stats.dave_failures == 0 and stats.transport_failures == 0 and stats.packets > 100
    finally:
        for t in talkers:
            t.cancel()
        await stop(p)
        await fake.stop()


@pytest.mark.slow
async def test_dave_version_0_members_are_mixed_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, guild, p, space_id = await on_air(tmp_path, monkeypatch, 0, [XCHACHA])
    talker: asyncio.Task[None] | None = None
    try:
        assert fake.voice.session["mode"] == XCHACHA and fake.voice.session["dave"] == 0
        stage = fake.channel_of(guild, STAGE)
        await fake.join_voice(guild, MEMBER, stage)
        member_acc = await approve(p, space_id, MEMBER)
        mika = await fake.voice.speaker(MEMBER, stage)
        talker = asyncio.create_task(speak(fake, mika, 660))
        window = (await ticks_until(p.rooms.ticks(space_id), lambda w: mixed(w, member_acc)))[-25:]
        assert level_at(np.concatenate([t.mix for t in window]), 660) > 0.5
        # they leave the call: nothing of theirs is decoded or mixed any more
        await fake.voice.leave(MEMBER)
        talker.cancel()
        await ticks_until(p.rooms.ticks(space_id), lambda w: all(member_acc not in t.speakers for t in w))
        room = p.rooms.rooms[space_id]
        assert member_acc not in room.external
    finally:
        if talker is not None:
            talker.cancel()
        await stop(p)
        await fake.stop()
