"""Recording with consent, end to end over the web room with real aiortc speakers: an opted-out
speaker's tone is absent from the file, the timeline's offsets match the audio, a clip is the last
30 s of the right audio, the replay page serves it all, and retention deletes it."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path

import aiohttp
import av
import numpy as np
import numpy.typing as npt
import pytest

from core.model.accounts import Actor
from core.ports import SAMPLE_RATE
from spacebridge.app import Instance
from tests.integration.webrtc.test_signaling import Peer, connect

pytestmark = pytest.mark.slow


def decode(data: bytes, path: Path) -> npt.NDArray[np.float64]:
    path.write_bytes(data)
    with av.open(str(path)) as f:
        chunks = [fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)]
    audio = np.concatenate(chunks).astype(np.float64)
    return audio * 32768 if chunks[0].dtype.kind == "f" else audio  # libopus decodes to floats in [-1, 1]


def level(audio: npt.NDArray[np.float64], hz: float, start_s: float, end_s: float) -> float:
    """Energy of one tone in a window, relative to full scale (0 = absent)."""
    seg = audio[int(start_s * SAMPLE_RATE):int(end_s * SAMPLE_RATE)]
    spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size))) / max(1, seg.size)
    freqs = np.fft.rfftfreq(seg.size, 1 / SAMPLE_RATE)
    return float(spec[(freqs > hz - 15) & (freqs < hz + 15)].max() / 32768)


def first_change(audio: npt.NDArray[np.float64], hz: float, after_s: float, present: bool) -> float:
    """The first 40 ms step after ``after_s`` where the tone is (or is no longer) there."""
    t = after_s
    while t < audio.size / SAMPLE_RATE - 0.04:
        on = level(audio, hz, t, t + 0.04) > 0.01
        if on == present:
            return t
        t += 0.02
    raise AssertionError(f"the {hz} Hz tone never {'came back' if present else 'stopped'} after {after_s} s")


async def idle(peers: list[Peer], seconds: float) -> None:
    """Wait while keeping every socket read, as a browser does (the server closes silent ones)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for peer in peers:
            try:
                msg = await peer.ws.receive(timeout=0.02)
            except TimeoutError:
                continue
            if msg.type == aiohttp.WSMsgType.TEXT:
                peer.inbox.append(json.loads(msg.data))


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str]:
    async with http.get(url) as r:
        return r.status, await r.read(), r.headers.get("Content-Type", "")


async def test_recording_with_consent_replay_and_clip(platform: Instance, tmp_path: Path) -> None:
    p, core = platform, platform.core
    hana = await core.ensure_account("web", "hana", "Hana")
    sam = await core.ensure_account("web", "sam", "Sam")
    finn = await core.ensure_account("web", "finn", "Finn")
    host = Actor(account_id=hana.id)
    space = await core.create_space(Actor(account_id=hana.id, is_community_admin=True), "Recorded talk")
    s = space.id
    await core.join(Actor(account_id=sam.id), s)
    await core.promote(host, s, sam.id, "speaker")
    now = core.now()
    async with aiohttp.ClientSession() as http:
        h = await connect(p, http, s, p.tokens.issue(s, hana.id, "speaker", now), 440)
        sp = await connect(p, http, s, p.tokens.issue(s, sam.id, "speaker", now), 660)
        for peer in (h, sp):
            await peer.recv("welcome")
            assert (await peer.media())["publish"] is True
        # Sam does not consent; a listener may not start a recording
        assert (await sp.command("optout"))["result"]["text"].startswith("Your voice is left out")
        assert (await sp.command("record", action="start"))["code"] == "role.moderator_required"
        assert (await h.command("record", action="pause"))["data"]["argument"] == "action"  # protocol.bad_argument
        assert (await h.command("clip"))["code"] == "recording.no_clip"
        await asyncio.sleep(2.0)  # both tones flowing through the room

        started = await h.command("record", action="start")
        assert started["type"] == "ok", started
        t0 = time.monotonic()
        replay_url = started["result"]["url"]
        assert (await h.command("record", action="start"))["code"] == "recording.already"
        # everyone is told and sees the indicator; the opted-out speaker is told their voice is left out
        await h.recv("event", event__type="space.badge", event__text="🔴 Recording")
        await h.recv("event", event__type="space.notice", event__kind="recording")
        mine = await sp.recv("event", event__type="space.notice", event__account_id=sam.id)
        assert "left out" in mine["event"]["text"]
        late = await connect(p, http, s, p.tokens.issue(s, finn.id, "listener", now), None)
        welcome = await late.recv("welcome")
        assert welcome["space"]["badges"] == {"recording": "🔴 Recording"}
        assert "optout" in {c["name"] for c in welcome["commands"]}

        everyone = [h, sp, late]
        await idle(everyone, 3.0)
        assert (await late.command("react", emoji="👏"))["type"] == "ok"
        await idle(everyone, 3.0)
        await core.mute(host, s, hana.id)  # the host mutes herself: silence in the file from here
        await idle(everyone, 2.0)
        await core.mute(host, s, hana.id, False)
        await core.pin(host, s, "Slides", url="https://example.org/slides")
        await idle(everyone, 32.5 - (time.monotonic() - t0))

        clip = await late.command("clip")  # any listener can clip
        assert clip["type"] == "ok", clip
        stopped = await h.command("record", action="stop")
        assert stopped["type"] == "ok" and stopped["result"]["url"] == replay_url
        await h.recv("event", event__type="space.badge", event__text=None)
        assert (await h.command("record", action="stop"))["code"] == "recording.not_recording"

        # the replay page, its audio and its timeline
        status, page, kind = await get(http, replay_url)
        assert status == 200 and b"<audio" in page and kind.startswith("text/html")
        status, body, _ = await get(http, replay_url + "/timeline.json")
        timeline = json.loads(body)
        status, ogg, kind = await get(http, replay_url + "/audio.ogg")
        assert status == 200 and kind == "audio/ogg" and ogg[:4] == b"OggS"
        audio = decode(ogg, tmp_path / "rec.ogg")
        duration = audio.size / SAMPLE_RATE
        assert abs(duration - timeline["duration_s"]) < 0.1 and 30 < duration < 40
        # consent: Hana's 440 Hz is in the file, Sam's 660 Hz is not (the room mix had both)
        assert level(audio, 440, 1.0, 5.0) > 0.02
        assert level(audio, 660, 1.0, 5.0) < 0.002, "an opted-out speaker is in the recording"
        # the timeline's offsets match the audio: the tone stops and resumes where the mute events say
        events = timeline["events"]
        muted = next(e for e in events if e["type"] == "speaker.muted" and e["muted"])
        unmuted = next(e for e in events if e["type"] == "speaker.muted" and not e["muted"])
        gone = first_change(audio, 440, muted["t"] - 1.0, present=False)
        back = first_change(audio, 440, gone + 0.5, present=True)
        assert abs(gone - muted["t"]) < 0.3, (gone, muted["t"])
        assert abs(back - unmuted["t"]) < 0.3, (back, unmuted["t"])
        reaction = next(e for e in events if e["type"] == "reaction.sent")
        assert reaction["emoji"] == "👏" and 0 < reaction["t"] < muted["t"] < unmuted["t"]  # in the order they happened
        assert any(e["type"] == "pin.added" and e["title"] == "Slides" for e in events)
        assert timeline["names"][hana.id] == "Hana"

        # the clip: the last 30 s, the same consenting mix, with the mute gap where it belongs
        status, clip_page, _ = await get(http, clip["result"]["url"])
        assert status == 200 and b"<audio" in clip_page
        status, body, _ = await get(http, clip["result"]["url"] + "/timeline.json")
        clip_meta = json.loads(body)
        status, clip_ogg, _ = await get(http, clip["result"]["url"] + "/audio.ogg")
        clip_audio = decode(clip_ogg, tmp_path / "clip.ogg")
        assert abs(clip_audio.size / SAMPLE_RATE - 30.0) < 0.1 and abs(clip_meta["duration_s"] - 30.0) < 0.1
        assert level(clip_audio, 660, 1.0, 5.0) < 0.002
        clip_mute = next(e for e in clip_meta["events"] if e["type"] == "speaker.muted" and e["muted"])
        offset = muted["t"] - clip_mute["t"]  # where the clip starts in the recording
        assert 0 < offset < duration - 29
        assert abs(first_change(clip_audio, 440, clip_mute["t"] - 1.0, present=False) - clip_mute["t"]) < 0.3
        assert np.corrcoef(clip_audio[: SAMPLE_RATE * 20],
                           audio[int(offset * SAMPLE_RATE): int(offset * SAMPLE_RATE) + SAMPLE_RATE * 20])[0, 1] > 0.5

        # listing from chat, and retention
        listed = await late.command("recordings")
        assert replay_url in listed["result"]["text"]
        plugin = p.plugins.plugins["recording"][0]
        assert await plugin.cleanup(core.now() + timedelta(days=29)) == 0  # type: ignore[attr-defined]
        assert await plugin.cleanup(core.now() + timedelta(days=31)) == 2  # type: ignore[attr-defined]
        assert (await get(http, replay_url))[0] == 404
        assert (await get(http, clip["result"]["url"] + "/audio.ogg"))[0] == 404
        assert not list((tmp_path / "plugins" / "recording").glob("*/audio.ogg"))
        for peer in (h, sp, late):
            await peer.client.pc.close()
            await peer.ws.close()


async def test_recording_ends_with_the_space_and_bad_ids_get_404(platform: Instance) -> None:
    p, core = platform, platform.core
    hana = await core.ensure_account("web", "hana", "Hana")
    space = await core.create_space(Actor(account_id=hana.id, is_community_admin=True), "Short")
    reply = await p.plugins.invoke("record", Actor(account_id=hana.id), space.id, {"action": "start"}, "telegram")
    assert reply.url is not None
    await asyncio.sleep(0.5)
    await core.end_space(Actor(account_id=hana.id), space.id)
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            if (await get(http, reply.url))[0] == 200:
                break
            await asyncio.sleep(0.05)
        assert (await get(http, reply.url))[0] == 200
        timeline = json.loads((await get(http, reply.url + "/timeline.json"))[1])
        assert timeline["title"] == "Short" and timeline["duration_s"] >= 0.2
        assert (await get(http, p.url + "/p/recording/r/nope"))[0] == 404
        assert (await get(http, p.url + "/p/recording/r/" + "x" * 300))[0] == 404
    assert (await core.view(space.id)).badges == {}

