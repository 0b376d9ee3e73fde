"""Discord voice received, measured on loopback: N DAVE-encrypting Stage members speaking at once into
one Space through the fake Discord and discord.py's real voice client, one aiortc web listener.

    python -m bench.discord_voice [--speakers N] [--seconds S] [--bursts B]

Prints JSON: Discord speakers mixed (distinct members in the room's ticks), CPU per Discord speaker
(this process's CPU with N members talking minus with none, per member, in % of one core), the
latency from a member's packet to the web listener's decoded frame (tone onsets after silence; the
listener's own aiortc jitter buffer included, as a web speaker's would be), and decrypt failures
(transport + DAVE, at the bot).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from adapters.discord.voice_rx import StageVoiceClient
from core.clock import FrozenClock
from core.model.accounts import Actor
from core.ports import FRAME_SAMPLES
from spacebridge.app import build, start, stop
from spacebridge.config import load_settings
from tests.integration.discord.test_voice_rx import tone_packets
from tests.integration.webrtc.test_signaling import connect
from tests.support.discord_fake import STAGE, TEXT, FakeDiscord, Mention
from tests.support.discord_voice_fake import AESGCM_MODE, XCHACHA, Member
from tests.support.loopback import LOOPBACK, ensure_loopback_alias

HOST = 300000000000000100
SILENCE = b"\xf8\xff\xfe"


async def talk(fake: FakeDiscord, member: Member, frames: list[bytes], stop_at: float) -> None:
    loop = asyncio.get_running_loop()
    due, i = loop.time(), 0
    while loop.time() < stop_at:
        fake.voice.send(member, frames[i % len(frames)])
        i += 1
        due += 0.02
        await asyncio.sleep(max(0.0, due - loop.time()))


async def run(speakers: int, seconds: float, bursts: int) -> dict[str, Any]:
    ensure_loopback_alias()
    fake = await FakeDiscord().start()
    fake.voice.dave_version, fake.voice.modes = 1, [AESGCM_MODE, XCHACHA]
    guild = fake.add_guild("Bench")
    uids = [HOST + 1 + i for i in range(speakers)]
    fake.add_member(guild, HOST, "Host")
    for uid in uids:
        fake.add_member(guild, uid, f"M{uid % 1000}")
    tmp = Path(tempfile.mkdtemp())
    os.environ["SPACEBRIDGE_DATA_DIR"] = str(tmp)
    settings = load_settings(
        database_url=f"sqlite:///{tmp / 'b.sqlite3'}", job_workers=0, discord_bot_token=fake.token,
        discord_api_base=fake.api_base, discord_gateway_url=f"ws://127.0.0.1:{fake.port}/gateway",
        discord_ca_file=fake.ca_file, discord_guild_ready_timeout_s=0.2, ice_announce=[LOOPBACK])
    p = await build(settings, clock=FrozenClock())
    await start(p, "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    try:
        stage, text = fake.channel_of(guild, STAGE), fake.channel_of(guild, TEXT)
        await fake.reply(await fake.interact(guild, guild.owner_id, "spacebridge", "setup", {
            "stage_channel": Mention("channel", stage), "announce_channel": Mention("channel", text),
            "host_rule": "everyone"}))
        await fake.reply(await fake.interact(guild, HOST, "space", "start", {"title": "Bench"}))
        space_id = (await p.core.list_spaces(states=("live",)))[0].id
        await asyncio.wait_for(fake.voice_ready.wait(), 20)
        host = await p.core.ensure_account("discord", str(HOST), "Host")
        members = []
        for uid in uids:
            await fake.join_voice(guild, uid, stage)
            acc = await p.core.ensure_account("discord", str(uid), "")
            while True:
                try:
                    await p.core.raise_hand(Actor(account_id=acc.id, platform="discord"), space_id)
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            await p.core.approve(Actor(account_id=host.id, platform="discord"), space_id, acc.id)
            members.append(await fake.voice.speaker(uid, stage))
        fan = await p.core.ensure_account("web", "fan", "Fan")
        async with aiohttp.ClientSession() as http:
            listener = await connect(p, http, space_id, p.tokens.issue(space_id, fan.id, "listener", p.core.now()),
                                     None)
            await listener.recv("welcome")
            await listener.media()

            # CPU: none talking, then all of them
            idle_t0, idle_c0 = time.monotonic(), time.process_time()
            await asyncio.sleep(seconds)
            idle = (time.process_time() - idle_c0) / (time.monotonic() - idle_t0)
            tones = [tone_packets(300 + 100 * i, 50) for i in range(speakers)]
            seen: set[str] = set()

            async def watch(until: float) -> None:
                async for tick in p.rooms.ticks(space_id):
                    seen.update(tick.speakers)
                    if loop.time() > until:
                        return

            t0, c0 = time.monotonic(), time.process_time()
            end = loop.time() + seconds
            await asyncio.gather(watch(end), *(talk(fake, m, tones[i], end) for i, m in enumerate(members)))
            busy = (time.process_time() - c0) / (time.monotonic() - t0)

            # latency: silence, then a tone onset from the first member; time to the listener's frame
            latencies = []
            for _ in range(bursts):
                await talk(fake, members[0], [SILENCE], loop.time() + 1.0)
                await asyncio.sleep(0.5)  # the stream goes idle; the listener hears silence
                sent = time.monotonic()
                task = asyncio.create_task(talk(fake, members[0], tones[0], loop.time() + 1.0))
                deadline = sent + 5
                heard_at = None
                while heard_at is None and time.monotonic() < deadline:
                    for t, pcm in list(listener.client.heard):
                        if t >= sent and float(np.sqrt(np.mean(np.square(pcm)))) > 500:
                            heard_at = t
                            break
                    await asyncio.sleep(0.005)
                await task
                if heard_at is not None:
                    latencies.append((heard_at - sent) * 1000)
            await listener.client.pc.close()
            await listener.ws.close()
        receiver = next(s.client.receiver for s in p.discord._state.voice.values()
                        if isinstance(s.client, StageVoiceClient)) if p.discord else None
        stats = receiver.stats if receiver is not None else None
        return {
            "discord_speakers": speakers,
            "discord_speakers_mixed": len(seen),
            "cpu_idle_pct": round(idle * 100, 1),
            "cpu_per_discord_speaker_pct": round((busy - idle) * 100 / max(1, speakers), 2),
            "latency_member_to_web_listener_ms": {
                "median": round(statistics.median(latencies), 1) if latencies else None,
                "max": round(max(latencies), 1) if latencies else None, "samples": len(latencies),
                "frame_ms": FRAME_SAMPLES / 48},
            "decrypt_failures": stats.decrypt_failures if stats else None,
            "dave_failures": stats.dave_failures if stats else None,
            "packets_received": stats.packets if stats else None,
            "dave": fake.voice.session.get("dave"), "mode": fake.voice.session.get("mode"),
        }
    finally:
        await stop(p)
        await fake.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--speakers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--bursts", type=int, default=5)
    a = ap.parse_args()
    print(json.dumps(asyncio.run(run(a.speakers, a.seconds, a.bursts)), indent=2))


if __name__ == "__main__":
    main()
