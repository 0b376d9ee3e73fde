"""Plugins under test: a third-party package built and pip-installed at test time, and whole platforms."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spacebridge.app import Instance, build, start, stop
from spacebridge.config import load_settings

THIRD_PARTY = '''
"""A third-party plugin, as someone outside the project would write it."""
from plugins.api import Option, Reply


class HelloPlugin:
    name = "hello"
    version = "0.3.1"

    async def setup(self, ctx):
        self.ctx = ctx
        ctx.subscribe(self.on_reaction, "reaction.sent")
        ctx.command("hello", "Say hello", self.hello, options=[Option("to", "Whom to greet", "text")], button="Wave")
        ctx.command("wipe", "Moderators only", self.hello, min_role="moderator")

    async def on_reaction(self, event):
        seen = await self.ctx.store.get(f"seen:{event.space_id}") or {"n": 0}
        await self.ctx.store.put(f"seen:{event.space_id}", {"n": seen["n"] + 1})

    async def hello(self, inv):
        return Reply(f"hello {inv.args.get('to', 'world')} from {inv.role}")

    def teardown(self):
        pass


class BrokenPlugin:
    """Registers things, then fails: none of it may stay."""

    name = "broken"
    version = "1.0"

    def setup(self, ctx):
        ctx.command("broken", "Should never appear", self.run)
        ctx.subscribe(self.run, "reaction.sent")
        ctx.text_filter(self.run)
        raise RuntimeError("the model file is missing")

    async def run(self, *args):
        raise AssertionError("a failed plugin's handler ran")

    def teardown(self):
        pass


def not_a_plugin():
    return object()
'''


@pytest.fixture(scope="session")
def third_party_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install`` a real package (pyproject + entry points) into its own site directory."""
    root = tmp_path_factory.mktemp("hello-plugin")
    src = root / "src"
    src.mkdir()
    (src / "sb_hello.py").write_text(THIRD_PARTY)
    (src / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "spacebridge-hello"
        version = "0.3.1"

        [tool.setuptools]
        py-modules = ["sb_hello"]

        [project.entry-points."spacebridge.plugins"]
        hello = "sb_hello:HelloPlugin"
        broken = "sb_hello:BrokenPlugin"
        oddity = "sb_hello:not_a_plugin"
    '''))
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--disable-pip-version-check", "--target", str(site), str(src)], check=True,
                   capture_output=True)
    return site


async def make_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: object) -> Instance:
    from tests.support.loopback import LOOPBACK, ensure_loopback_alias

    ensure_loopback_alias()
    monkeypatch.setenv("SPACEBRIDGE_DATA_DIR", str(tmp_path))
    settings = load_settings(**{"database_url": f"sqlite:///{tmp_path / 'p.sqlite3'}", "ice_announce": [LOOPBACK],
                                "job_workers": 0, **overrides})
    p = await build(settings)
    await start(p, "127.0.0.1", 0)
    return p


@pytest.fixture
async def plugged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, third_party_site: Path) -> AsyncIterator[Instance]:
    """A whole instance that finds the third-party plugins next to the first-party ones."""
    monkeypatch.syspath_prepend(str(third_party_site))
    p = await make_platform(tmp_path, monkeypatch)
    yield p
    await stop(p)
