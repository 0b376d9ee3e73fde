"""The room's ``levels`` reports, which light a speaker's ring on every page.

A speaker is an ``ExternalSource`` here (the way a Discord member reaches the room): its frames are
exactly what the mixer gets each tick, so the reports can be checked against what was said. The
room runs on its own clock; the test waits on its reports, never on time.
"""

from __future__ import annotations

import asyncio

import numpy as np

from adapters.webrtc.mixer import Pcm
from adapters.webrtc.room import LEVEL_HOLD, Room
from core.ports import FRAME_SAMPLES, SAMPLE_RATE

SPEAKING_DBFS = -45.0  # the web page's threshold (room.js paintLevels)
BEEP_EVERY = 25  # ticks: a 20 ms beep every 500 ms, as Chromium's fake microphone sends
_t = np.arange(FRAME_SAMPLES) / SAMPLE_RATE
BEEP: Pcm = (0.3 * 32767 * np.sin(2 * np.pi * 400 * _t)).astype(np.int16)
QUIET: Pcm = np.zeros(FRAME_SAMPLES, dtype=np.int16)


class Beeper:
    """A speaker who beeps for one tick in every ``BEEP_EVERY``, or is silent once told to stop."""

    def __init__(self) -> None:
        self.pulls = 0
        self.talking = True

    def pull(self) -> Pcm | None:
        self.pulls += 1
        return BEEP if self.talking and self.pulls % BEEP_EVERY == 3 else QUIET

    def skip(self) -> None:
        pass


async def _room_with(speaker: Beeper) -> tuple[Room, asyncio.Queue[dict[str, float]]]:
    room = Room("s1")
    reports: asyncio.Queue[dict[str, float]] = asyncio.Queue()
    room.on_levels = reports.put_nowait
    room.add_external("mika", "discord", speaker)
    room.set_publishers({"mika"})
    return room, reports


async def _until_speaking(reports: asyncio.Queue[dict[str, float]]) -> None:
    """Reports until one shows the speaker speaking (their first beep comes within a second)."""
    for _ in range(25):
        if (await asyncio.wait_for(reports.get(), 10)).get("mika", -90.0) > SPEAKING_DBFS:
            return
    raise AssertionError("25 reports (5 s of beeping) and the speaker was never shown speaking")


async def test_a_short_sound_lights_every_report_while_they_keep_talking() -> None:
    """One tick's reading per report missed a 20 ms beep whenever it fell between two readings, so
    a speaker's ring flickered or never lit; the report holds the loudest moment of its window and
    the windows before, so a speaker talking with pauses is shown speaking in every report."""
    beeper = Beeper()
    room, reports = await _room_with(beeper)
    try:
        await _until_speaking(reports)
        shown = [(await asyncio.wait_for(reports.get(), 10)).get("mika", -90.0) for _ in range(15)]
        assert all(db > SPEAKING_DBFS for db in shown), shown
    finally:
        await room.close()


async def test_the_ring_clears_when_the_speaker_goes_silent_or_leaves_the_stage() -> None:
    beeper = Beeper()
    room, reports = await _room_with(beeper)
    try:
        await _until_speaking(reports)
        beeper.talking = False
        quiet_after = 0
        while (await asyncio.wait_for(reports.get(), 10)).get("mika", -90.0) > SPEAKING_DBFS:
            quiet_after += 1
            assert quiet_after <= LEVEL_HOLD + 1, "still shown speaking long after going silent"
        beeper.talking = True
        await _until_speaking(reports)
        room.set_publishers(set())  # muted, or moved to the audience: gone from the very next report
        assert "mika" not in await asyncio.wait_for(reports.get(), 10)
    finally:
        await room.close()
