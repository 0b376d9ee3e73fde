"""The Space's audio on the Stage: a web speaker's tone reaches Discord as the room's own Opus.

The bot joins the Stage through discord.py's real voice client (voice gateway over TLS, UDP with IP
discovery, ``aead_xchacha20_poly1305_rtpsize``); the fake voice server decrypts what arrives and
the test decodes it. DAVE is negotiated at version 0 by the fake (see its docstring).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from core.clock import FrozenClock
from core.ports import SAMPLE_RATE
from spacebridge.app import stop
from tests.integration.discord.conftest import make_dc
from tests.integration.webrtc.test_signaling import connect
from tests.support.discord_fake import BOT_ID, STAGE, TEXT, FakeDiscord, Mention
from tests.support.loopback import LOOPBACK, ensure_loopback_alias


def peak(pcm: Any) -> tuple[float, float]:
    """(strongest frequency between 100 Hz and 2 kHz, the FFT's bin width) of mono 48 kHz ``pcm``."""
    spec = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(pcm.size)))
    freqs = np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)
    band = (freqs > 100) & (freqs < 2000)
    return float(freqs[band][int(np.argmax(spec[band]))]), SAMPLE_RATE / pcm.size


class StageAudio:
    """What the bot has sent to the Stage, decoded as it arrives (the fake voice server decrypted it)."""

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake, self.seen = fake, 0
        self.decoder: Any = av.CodecContext.create("libopus", "r")
        self.pcm: list[Any] = []

    def decode_new(self) -> None:
        for _, _, opus in self.fake.voice_packets[self.seen:]:
            for frame in self.decoder.decode(av.Packet(opus)):
                self.pcm.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1))
        self.seen = len(self.fake.voice_packets)

    async def until_tone(self, hz: float, seconds: float = 1.0, deadline_s: float = 60) -> tuple[float, float]:
        """Wait until the last ``seconds`` of decoded audio peak within two FFT bins of ``hz`` (the
        speaker's media takes a moment to connect; a busy machine only makes that moment longer)."""
        loop = asyncio.get_running_loop()
        end, last = loop.time() + deadline_s, (0.0, 0.0)
        need = int(seconds * SAMPLE_RATE)
        while loop.time() < end:
            self.decode_new()
            audio = np.concatenate(self.pcm)[-need:] if self.pcm else np.zeros(0)
            if audio.size == need:
                last = peak(audio)
                if abs(last[0] - hz) <= 2 * last[1]:
                    return last
            await asyncio.sleep(0.05)
        raise AssertionError(f"Discord never heard {hz} Hz: the last second peaked at {last[0]} Hz")


@pytest.mark.slow
async def test_a_web_speakers_tone_reaches_the_stage_as_opus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_loopback_alias()
    fake = await FakeDiscord().start()
    guild = fake.add_guild("Voice")
    host = 300000000000000020
    fake.add_member(guild, host, "Hana")
    p = await make_dc(tmp_path, monkeypatch, fake, FrozenClock(), ice_announce=[LOOPBACK])
    try:
        stage, text = fake.channel_of(guild, STAGE), fake.channel_of(guild, TEXT)
        await fake.reply(await fake.interact(guild, guild.owner_id, "spacebridge", "setup", {
            "stage_channel": Mention("channel", stage), "announce_channel": Mention("channel", text),
            "host_rule": "everyone"}))
        await fake.reply(await fake.interact(guild, host, "space", "start", {"title": "On air"}))
        space = (await p.core.list_spaces(states=("live",)))[0]
        await asyncio.wait_for(fake.voice_ready.wait(), 20)
        # the bot asked to speak on the Stage (it is a stage moderator) and plays the room
        unsuppress = await fake.wait_for(lambda c: c.method == "PATCH" and c.path.endswith("/voice-states/@me"))
        assert unsuppress.body["suppress"] is False
        assert fake.voice_sessions[0]["mode"] == "aead_xchacha20_poly1305_rtpsize"

        host_acc = await p.core.ensure_account("discord", str(host), "Hana")
        async with aiohttp.ClientSession() as http:
            speaker = await connect(p, http, space.id, p.tokens.issue(space.id, host_acc.id, "speaker",
                                                                     p.core.now()), 440)
            await speaker.recv("welcome")
            await speaker.media()
            heard = StageAudio(fake)
            await heard.until_tone(440)  # over 1 s of audio: 1 Hz bins, a peak within 2 Hz
            packets = list(fake.voice_packets)
            await speaker.client.pc.close()
            await speaker.ws.close()
        assert len(packets) >= 50, "the bot streams 50 packets a second"
        seqs = [s for _, s, _ in packets[-50:]]
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(seqs)), "RTP sequence has gaps"
        source = p.discord.voice_source(guild.id) if p.discord else None
        assert source is not None and source.played >= 25, "the Stage got silence filler, not the room"

        await fake.reply(await fake.interact(guild, host, "space", "end", {}))
        left = await fake.wait_for(lambda c: c.method == "DELETE" and c.path == f"/stage-instances/{stage}")
        assert left
        deadline = asyncio.get_running_loop().time() + 30
        while guild.voice.get(BOT_ID) is not None:  # its voice state update is on its way
            assert asyncio.get_running_loop().time() < deadline, "the bot stayed on the Stage after the Space ended"
            await asyncio.sleep(0.05)
    finally:
        await stop(p)
        await fake.stop()
