"""The plugin API end to end: an installed third-party package is found and loaded; one that fails in
setup leaves nothing behind and the platform keeps serving; commands reach the web room with role
and per-Community checks; `plugins list` and `doctor` report what happened."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from core.model.accounts import Actor
from spacebridge.app import Instance
from tests.integration.webrtc.test_signaling import connect


async def cli(platform: Instance, site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, while this process keeps serving (SQLite is shared)."""
    env = {**os.environ, "SPACEBRIDGE_DATABASE_URL": platform.settings.resolved_database_url(),
           "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "spacebridge", *args],
                                   capture_output=True, text=True, env=env, timeout=120)


async def test_third_party_plugin_loads_and_a_broken_one_leaves_nothing(plugged: Instance,
                                                                        third_party_site: Path) -> None:
    p = plugged
    states = {n: s.state for n, s in p.plugins.statuses.items()}
    assert states == {"captions": "loaded", "moderation": "loaded", "recording": "loaded", "hello": "loaded",
                      "broken": "failed", "oddity": "failed"}
    assert "the model file is missing" in p.plugins.statuses["broken"].error
    assert "not a plugin" in p.plugins.statuses["oddity"].error
    assert p.plugins.statuses["hello"].version == "0.3.1"
    # nothing of the broken plugin is registered anywhere
    assert "broken" not in p.plugins.commands
    subs = getattr(p.bus, "_subs")  # noqa: B009 - the bus's own subscriber list, read only
    assert not [s for s in subs if "plugin:broken" in getattr(s.handler, "__qualname__", "")]
    assert [s for s in subs if "plugin:hello" in getattr(s.handler, "__qualname__", "")]
    assert len(p.core.text_filters) == 1  # moderation's only

    host = await p.core.ensure_account("web", "h", "Hana")
    fan = await p.core.ensure_account("web", "f", "Finn")
    space = await p.core.create_space(Actor(account_id=host.id, is_community_admin=True), "Plugged in")
    now = p.core.now()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{p.url}/healthz") as r:
            assert r.status == 200
        peer = await connect(p, http, space.id, p.tokens.issue(space.id, fan.id, "listener", now), None)
        welcome = await peer.recv("welcome")
        names = {c["name"] for c in welcome["commands"]}
        assert {"hello", "wipe", "record", "clip", "optout", "audit", "block", "filter", "mute_all"} <= names
        assert "muteall" not in names  # the table's mute_all; the old name is an alias, not a second entry
        assert "broken" not in names
        hello = next(c for c in welcome["commands"] if c["name"] == "hello")
        assert hello["button"] == "Wave" and hello["options"][0]["kind"] == "text"

        r = await peer.command("hello", to="Ada")
        assert r["type"] == "ok" and r["result"]["text"] == "hello Ada from listener"
        r = await peer.command("wipe")
        assert r["type"] == "error" and r["code"] == "role.moderator_required"
        r = await peer.command("hello", to=5)
        assert r["code"] == "protocol.bad_argument" and r["data"]["argument"] == "to"  # one table, one refusal
        assert "must be text" in r["message"]
        r = await peer.command("hello", whom="x")
        assert r["code"] == "protocol.bad_argument" and r["data"]["argument"] == "whom"
        r = await peer.command("broken")
        assert r["code"] == "protocol.unknown_command"
        # events reach the plugin; the broken plugin's handler never runs (it would raise)
        await p.core.react(Actor(account_id=fan.id), space.id, "👏")
        await p.core.pin(Actor(account_id=host.id), space.id, "agenda", url="https://example.org/agenda")
        store = p.plugins.plugins["hello"][1].store
        for _ in range(50):
            if (await store.get(f"seen:{space.id}") or {}).get("n") == 1:
                break
            await asyncio.sleep(0.05)
        assert await store.get(f"seen:{space.id}") == {"n": 1}
        await peer.ws.close()

    # another process sees what serve recorded
    listed = await cli(p, third_party_site, "plugins", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["hello"]["state"] == "loaded" and rows["hello"]["version"] == "0.3.1"
    assert rows["broken"]["state"] == "failed" and "model file is missing" in rows["broken"]["error"]
    doctor = await cli(p, third_party_site, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert doctor.returncode != 0  # a failed plugin is something to fix
    assert checks["plugin broken"]["ok"] is False and "model file is missing" in checks["plugin broken"]["detail"]
    assert checks["plugin oddity"]["ok"] is False
    assert checks["plugin hello"]["ok"] is True and checks["plugin captions"]["ok"] is True


async def test_a_community_turns_a_plugin_off(plugged: Instance, third_party_site: Path) -> None:
    p = plugged
    community = await p.core.ensure_community("web", "club", "Book club")
    bad = await cli(p, third_party_site, "plugins", "disable", "nosuch", "--community", community.id)
    assert bad.returncode == 2 and "no installed plugin" in bad.stderr
    off = await cli(p, third_party_site, "plugins", "disable", "hello", "--community", community.id)
    assert off.returncode == 0, off.stderr
    assert (await p.core.community(community.id)).settings.plugins_disabled == ["hello"]

    host = await p.core.ensure_account("web", "h", "Hana")
    actor = Actor(account_id=host.id, is_community_admin=True)
    here = await p.core.create_space(actor, "In the club", community_id=community.id)
    elsewhere = await p.core.create_space(Actor(account_id=(await p.core.ensure_account("web", "o", "O")).id,
                                                is_community_admin=True), "Elsewhere")
    async with aiohttp.ClientSession() as http:
        peer = await connect(p, http, here.id, p.tokens.issue(here.id, host.id, "speaker", p.core.now()), None)
        await peer.recv("welcome")
        r = await peer.command("hello")
        assert r["code"] == "plugin.disabled" and "turned off in this community" in r["message"]
        assert (await peer.command("audit"))["type"] == "ok"  # other plugins still work here
        await p.core.react(actor, here.id, "👏")
        await p.core.react(actor, elsewhere.id, "👏")
        store = p.plugins.plugins["hello"][1].store
        for _ in range(50):
            if await store.get(f"seen:{elsewhere.id}"):
                break
            await asyncio.sleep(0.05)
        assert await store.get(f"seen:{elsewhere.id}") == {"n": 1}
        assert await store.get(f"seen:{here.id}") is None  # no events where it is off
        await peer.ws.close()
    assert (await p.plugins.invoke("hello", actor, elsewhere.id, {}, "web")).text.startswith("hello world")


async def test_captions_backend_misconfigured_is_reported_and_the_platform_serves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Vosk and faster-whisper need a local model: without one (or without the package), or with a
    model that does not load in the recognition worker, the plugin does not load, says why, and
    everything else runs."""
    from spacebridge.app import stop
    from tests.integration.plugins.conftest import make_platform

    for config, why in (({"backend": "vosk"}, "needs model_path"),
                        ({"backend": "faster-whisper", "model_path": str(tmp_path)}, "pip install faster-whisper"),
                        ({"backend": "whisperish"}, "Input should be"),
                        ({"backend": "pocketsphinx", "model_path": str(tmp_path / "nothing-here")},
                         "pocketsphinx could not load its model from")):
        p = await make_platform(tmp_path / config["backend"], monkeypatch, plugins={"captions": config})
        try:
            status = p.plugins.statuses["captions"]
            assert status.state == "failed" and why in status.error, status
            assert p.plugins.statuses["recording"].state == "loaded"
            async with aiohttp.ClientSession() as http, http.get(f"{p.url}/healthz") as r:
                assert r.status == 200
        finally:
            await stop(p)
