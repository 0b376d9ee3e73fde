"""Journeys in Chromium against a real ``spacebridge serve`` process: the first run (the link serve
prints -> a passkey -> the instance's admin, who opens the studio and schedules a Space), and a
restart mid-Space (SIGTERM, then serve again on the same database and port: the host's and a
listener's pages come back by themselves, the Space is still live and the listener hears the host).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_browser_room import LEVEL_JS
from tests.e2e.test_web_signin import CHROMIUM, FLAGS, chromium_present, passkey_context
from tests.support.netguard.plugin import ICE_ALLOWED

__all__ = ["chromium_present"]  # the fixture that skips (or fails in CI) without Chromium

ROOT = Path(__file__).resolve().parents[2]
SERVING = re.compile(r"Spacebridge is serving at http://127\.0\.0\.1:(\d+)")
FIRST_RUN = re.compile(r"First run: open (http://localhost:\d+/signin\?first_run=\S+) ")


@dataclass
class Serve:
    """``spacebridge serve`` on one data directory; its output goes to files (a pipe nobody reads
    would fill and block it). Started again, it keeps the data directory and the port."""

    data: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    runs: int = 0
    printed: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> str:
        self.runs += 1
        out = self.data.parent / f"serve-{self.runs}.out"
        err = self.data.parent / f"serve-{self.runs}.err"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SPACEBRIDGE_", "DISCORD_", "TELEGRAM_", "STRIPE_"))}
        env.update(SPACEBRIDGE_DATA_DIR=str(self.data), SPACEBRIDGE_ICE_ALLOWED_NETWORKS=ICE_ALLOWED)
        if "SPACEBRIDGE_LOG_FILE" in os.environ:
            env["SPACEBRIDGE_LOG_FILE"] = os.environ["SPACEBRIDGE_LOG_FILE"]
        with out.open("wb") as o, err.open("wb") as e:
            self.proc = subprocess.Popen([sys.executable, "-m", "spacebridge", "serve", "--port", str(self.port)],
                                         cwd=ROOT, env=env, stdout=o, stderr=e)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # serve prints its address once it listens
            self.printed = out.read_text()
            m = SERVING.search(self.printed)
            if m and "\n" in self.printed[m.end():]:
                self.port = int(m.group(1))
                return f"http://localhost:{self.port}"
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {err.read_text()[-2000:]}")
            time.sleep(0.1)
        raise AssertionError(f"serve printed no address: {self.printed!r}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            assert self.proc.wait(timeout=60) == 0, f"serve exited {self.proc.returncode} on signal {sig}"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    s = Serve(tmp_path / "data")
    yield s
    s.stop(signal.SIGINT)


async def first_run_admin(serve: Serve, browser: Any, name: str) -> Any:
    """Open the first-run link serve printed and make the account with a passkey: the admin."""
    m = FIRST_RUN.search(serve.printed)
    assert m, f"serve printed no first-run link: {serve.printed!r}"
    ctx = await passkey_context(browser)
    page = ctx.pages[0]
    await page.goto(m.group(1))
    await page.wait_for_selector("#auth-status:has-text('Welcome to your new Spacebridge')")
    await page.get_by_label("Display name").fill(name)
    await page.get_by_role("button", name="Create account with a passkey").click()
    await page.wait_for_selector(f"#account-name:has-text('{name}')", timeout=15_000)
    return page


async def test_first_run_link_makes_the_admin_who_schedules_from_the_studio(serve: Serve) -> None:
    from playwright.async_api import async_playwright

    base = serve.start()
    assert "to create the admin account with a passkey" in serve.printed
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = await first_run_admin(serve, browser, "Ada Admin")
        # the instance's admin: the admin view of the studio opens
        response = await page.goto(f"{base}/studio/admin")
        assert response is not None and response.status == 200
        assert await page.locator("h1").inner_text() == "Communities and host rules"
        # and may host on this fresh install: schedule a Space from the studio
        await page.goto(f"{base}/studio")
        assert await page.locator("text=Ask an admin of this instance").count() == 0
        starts = (datetime.now(UTC) + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M")
        await page.get_by_label("Title", exact=True).fill("First light")
        await page.get_by_label("Starts at (UTC, up to 30 days ahead)").fill(starts)
        await page.get_by_role("button", name="Create Space").click()
        await page.wait_for_url("**/studio/s/*")
        assert await page.locator("h1").inner_text() == "First light"
        space_id = page.url.rsplit("/", 1)[1]
        # everyone sees it coming on the home page
        visitor = await (await browser.new_context()).new_page()
        await visitor.goto(f"{base}/")
        await visitor.locator(f'a[href="/s/{space_id}"]:has-text("First light")').first.wait_for()

        # the link worked once: a second visitor with it is told the admin exists and signs up a member
        m = FIRST_RUN.search(serve.printed)
        assert m
        await visitor.goto(m.group(1))
        await visitor.wait_for_selector("#auth-status:has-text('This instance has its admin already')")
        await browser.close()
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/spaces/{space_id}") as r:
        assert r.status == 200
        assert (await r.json())["state"] == "scheduled"


async def hears(page: Any) -> float:
    """The loudest sample the page's <audio> element receives over about a second (0 when none)."""
    level: float = await page.evaluate(LEVEL_JS)
    return level


async def wait_hearing(page: Any, tries: int = 30) -> float:
    """Measure until the listener hears the host's tone (Chromium's fake microphone beeps, so one
    window of a second may fall between beeps); each measurement is an observation, not a sleep."""
    level = 0.0
    for _ in range(tries):
        level = await hears(page)
        if level > 0.01:
            return level
    return level


async def test_restart_mid_space_everyone_comes_back(serve: Serve) -> None:
    from playwright.async_api import async_playwright

    base = serve.start()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        host = await first_run_admin(serve, browser, "Hana Host")
        # the host starts a Space now from the studio and opens its room
        await host.goto(f"{base}/studio")
        await host.get_by_label("Title", exact=True).fill("Through the restart")
        await host.get_by_label("Start now").check()
        await host.get_by_role("button", name="Create Space").click()
        await host.wait_for_url(re.compile(r".*/s/[^/]+$"))  # a live Space: straight into its room
        space_id = host.url.rsplit("/", 1)[1]
        await host.wait_for_selector("#stage li[aria-label^='Hana Host']", timeout=20_000)
        # a guest listens on the shared address
        guest = await (await browser.new_context()).new_page()
        await guest.goto(f"{base}/s/{space_id}")
        await guest.wait_for_selector("text=Hosted by Hana Host")
        await guest.wait_for_selector("#stage li.speaking[aria-label^='Hana Host']", timeout=30_000)
        assert await wait_hearing(guest) > 0.01, "the guest does not hear the host before the restart"

        serve.stop(signal.SIGTERM)
        for page in (host, guest):  # each page sees the server go and says it is coming back
            await page.wait_for_selector("#status:has-text('reconnecting')", timeout=20_000)
        assert serve.start() == base  # the same port and database
        for page in (host, guest):  # back by themselves: nobody reloads
            await page.wait_for_selector("#status:not(:has-text('reconnecting'))", state="attached",
                                         timeout=60_000)
        await guest.wait_for_selector("#stage li.speaking[aria-label^='Hana Host']", timeout=60_000)
        assert await wait_hearing(guest) > 0.01, "the guest does not hear the host after the restart"
        assert await host.locator("text=This Space has ended").count() == 0
        await browser.close()
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/spaces/{space_id}") as r:
        assert (await r.json())["state"] == "live"
