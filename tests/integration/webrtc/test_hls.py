"""HLS for big audiences: the room's own encode as fMP4 segments and a rolling playlist, served by
nginx (Debian's package) from the directory the media process writes, decoding to the room's audio;
listeners past the room's WebRTC limit, or who ask, are sent there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest

from core.model.accounts import Actor
from core.ports import SAMPLE_RATE
from spacebridge.app import Instance
from tests.integration.webrtc.test_room_media import Client
from tests.integration.webrtc.test_signaling import Peer
from tests.support.nginx import hls_guarded_location, require_nginx, start_nginx, stop_nginx
from tests.support.stripe_fake import free_port


@pytest.fixture
def nginx(tmp_path: Path, platform: Instance) -> Iterator[str]:
    """nginx serving the platform's HLS directory at /hls/, as docs/deploy.md configures it (each
    request's token checked by the app's /hls-auth)."""
    require_nginx()
    hls_dir = platform.rooms.hls_dir
    assert hls_dir is not None
    port = free_port()
    proc = start_nginx(tmp_path / "nginx", port, hls_guarded_location(hls_dir, platform.url))
    yield f"http://127.0.0.1:{port}"
    stop_nginx(proc)


def playlist(text: str) -> tuple[int, list[str], bool]:
    lines = text.splitlines()
    seq = next(int(x.split(":")[1]) for x in lines if x.startswith("#EXT-X-MEDIA-SEQUENCE:"))
    return seq, [x for x in lines if x and not x.startswith("#")], "#EXT-X-ENDLIST" in lines


def peak_hz(pcm: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(pcm * np.hanning(pcm.size)))
    freqs = np.fft.rfftfreq(pcm.size, 1 / SAMPLE_RATE)
    return float(freqs[int(np.argmax(spec[1:])) + 1])


async def test_hls_is_the_rooms_audio_served_by_nginx_and_rolls(platform: Instance, nginx: str,
                                                                 tmp_path: Path) -> None:
    p, core = platform, platform.core
    hana = await core.ensure_account("web", "hana", "Hana")
    finn = await core.ensure_account("web", "finn", "Finn")
    ada = await core.ensure_account("web", "ada", "Ada")
    space = await core.create_space(Actor(account_id=hana.id, is_community_admin=True), "Big audience")
    s, now = space.id, core.now()
    async with aiohttp.ClientSession() as http:
        async def join(account_id: str, role: str, hz: float | None) -> Peer:
            peer = Peer(http, await http.ws_connect(f"{p.url}/ws/{s}"), Client(hz))
            await peer.ws.send_json({"type": "hello", "token": p.tokens.issue(s, account_id, role, now)})
            await peer.recv("welcome")
            return peer

        host = await join(hana.id, "speaker", 440)
        assert (await host.media())["publish"] is True
        # a listener asks for HLS (the page's #hls=1): the answer is where to fetch it
        finn_peer = await join(finn.id, "listener", None)
        await finn_peer.ws.send_json({"type": "hls"})
        grant = await finn_peer.recv("hls", reason="asked")
        url, token = grant["url"], grant["url"].split("?t=")[1]
        key = url.split("/")[2]
        assert url == f"/hls/{key}/index.m3u8?t={token}" and key.startswith(f"{s}-") and len(key) > len(s) + 16
        assert grant["expires_in_s"] == 60

        # nginx serves the playlist the room writes; it rolls, and old segments are deleted
        deadline = time.monotonic() + 20
        while True:
            async with http.get(nginx + url) as r:
                if r.status == 200:
                    seq, segs, ended = playlist(await r.text())
                    if len(segs) >= 5:
                        break
            assert time.monotonic() < deadline, "no HLS playlist with 5 segments through nginx"
            await asyncio.sleep(0.5)
        assert r.headers["Content-Type"] == "application/vnd.apple.mpegurl" and not ended
        assert all(x.endswith(f".m4s?t={token}") for x in segs), segs  # nginx put the person's token on each
        first = segs[0]
        deadline = time.monotonic() + 60  # a busy machine encodes slowly: wait for the window to roll on
        while True:  # three new segments (polling the playlist as a player does), never a fixed sleep
            async with http.get(nginx + url) as r:
                seq2, segs2, _ = playlist(await r.text())
            if seq2 >= seq + 3:
                break
            assert time.monotonic() < deadline, f"the playlist never rolled 3 segments on from {seq} ({seq2})"
            await asyncio.sleep(0.5)
        assert segs2[0] != first and len(segs2) <= 6, (seq, seq2, segs2)
        deadline = time.monotonic() + 10
        while True:  # gone from the disk once out of the window (and the muxer's grace)
            async with http.get(f"{nginx}/hls/{key}/{first}") as r:
                if r.status == 404:
                    break
            assert time.monotonic() < deadline, f"{first} is never deleted"
            await asyncio.sleep(0.5)

        # the segments decode (init + media, as a player appends them) to the speaker's 440 Hz
        async with http.get(f"{nginx}/hls/{key}/init.mp4?t={token}") as r:
            media = await r.read()
        for name in segs2[-3:]:
            async with http.get(f"{nginx}/hls/{key}/{name}") as r:
                assert r.status == 200 and r.headers["Content-Type"] == "video/iso.segment"
                media += await r.read()
        (tmp_path / "live.mp4").write_bytes(media)
        with av.open(str(tmp_path / "live.mp4")) as f:
            pcm = np.concatenate([fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)])
        assert pcm.size >= 2 * SAMPLE_RATE
        assert abs(peak_hz(pcm[-SAMPLE_RATE:].astype(np.float64)) - 440) < 10
        # the app serves the same files (no nginx in a one-process install); only under the secret key
        async with http.get(p.url + url) as r:
            assert r.status == 200 and (await r.text()).startswith("#EXTM3U")
        for guess in (f"/hls/{s}/index.m3u8", f"/hls/{s}-{'0' * 20}/index.m3u8", f"/hls/{key}/../../secret.key"):
            async with http.get(p.url + guess) as r:
                assert r.status == 404, guess

        # past the room's WebRTC limit, a listener's offer is answered with HLS instead
        p.rooms.max_listeners = 0
        ada_peer = await join(ada.id, "listener", None)
        pc = ada_peer.client.pc
        await pc.setLocalDescription(await pc.createOffer())
        await ada_peer.ws.send_json({"type": "offer", "sdp": pc.localDescription.sdp})
        assert (await ada_peer.recv("hls"))["reason"] == "room_full"

        # the Space ends: the playlist says so, so players stop at its end
        await core.end_space(Actor(account_id=hana.id), s)
        deadline = time.monotonic() + 10
        while True:
            async with http.get(nginx + url) as r:
                if playlist(await r.text())[2]:
                    break
            assert time.monotonic() < deadline, "the ended Space's playlist has no EXT-X-ENDLIST"
            await asyncio.sleep(0.3)
        for peer in (host, finn_peer, ada_peer):
            await peer.client.pc.close()
            await peer.ws.close()
