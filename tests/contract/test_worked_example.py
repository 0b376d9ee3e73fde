"""docs/architecture.md's worked example, proven: one table entry and one handler appear on every surface.

Issue 16's measure: adding a command with an option and a least role touches one table entry and one
handler. Here the doc's own code (checked identical below) is added to a table the way a developer adds
it to ``BUILTINS`` (``BUILTINS`` plus the entry), and each surface is started with that table where it
reads its table from (``spacebridge.app.build(table=...)``: the plugin manager's ``table``, which the web
room, Discord and Telegram read; ``spacebridge.cli_commands.with_table`` for the CLI's ``cmd``). Then,
through each contract driver: the command is offered (web ``welcome.commands``, Discord's synced
``/space title``, Telegram's menu and ``/help``, ``spacebridge cmd --help``), the host renames a live and
a scheduled Space, a listener is refused with the table's code, and a bad title changes nothing.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from core.commands import BUILTINS, Command, Invocation, Option, Outcome
from tests.contract.conftest import SURFACES, surface
from tests.contract.drivers import CliDriver, DiscordDriver, Driver, TelegramDriver, WebDriver
from tests.contract.test_commands import make_ctx

pytestmark = pytest.mark.asyncio(loop_scope="module")
DOC = Path(__file__).parents[2] / "docs" / "architecture.md"


# ---- the doc's example, as written there ----------------------------------------------------------
async def _title(i: Invocation) -> Outcome:
    await i.core.edit_space(i.actor, i.space_id, title=str(i.args["text"]))
    return Outcome("space.renamed", {"title": i.args["text"]})


TITLE = Command("title", "Rename the Space", _title, (Option("text", "text", "The new title", True, max_len=100),),
                "host", ("scheduled", "live"), icon="✏️")
# ---- end of the doc's example ----------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=SURFACES)
async def titled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Driver]:
    """A surface whose command table is the core's plus the doc's ``title``."""
    async with surface(request.param, tmp_path_factory.mktemp(f"worked-{request.param}"), (*BUILTINS, TITLE)) as d:
        yield d


def _squash(code: str) -> str:
    return re.sub(r"\s+", "", code)


async def test_the_doc_shows_exactly_this_code() -> None:
    """The handler and the entry here are the doc's, character for character (whitespace aside)."""
    doc = DOC.read_text()
    start = doc.index("Worked example:")
    block = doc[doc.index("```python", start) + len("```python"):doc.index("```", doc.index("```python", start) + 9)]
    me = Path(__file__).read_text()
    entry = me[me.index('Command("title"'):me.index('icon="✏️")') + len('icon="✏️")')]
    assert _squash(inspect.getsource(_title)) in _squash(block), "the doc's handler differs from the test's"
    assert _squash(entry) in _squash(block), "the doc's table entry differs from the test's"


async def _title_of(d: Driver, space_id: str) -> str:
    return (await d.core.view(space_id)).space.title


async def test_the_surface_offers_title(titled: Driver) -> None:
    d = titled
    c = await make_ctx(d, "live")
    await d.run(c.listener, "share", c.space_id)  # the web page learns its commands in the welcome
    assert "title" in d.offered(), f"{d.surface} does not offer title"
    if isinstance(d, WebDriver):
        entry = next(e for e in d.welcome["commands"] if e["name"] == "title")
        assert (entry["least_role"], entry["states"], entry["button"], entry["icon"]) == \
            ("host", ["scheduled", "live"], None, "✏️")  # no button: it has a required option
        assert entry["options"] == [{"name": "text", "kind": "text", "description": "The new title",
                                     "required": True, "choices": [], "max_len": 100}]
    elif isinstance(d, DiscordDriver):
        assert d._paths()["title"] == ("space", "title")  # host-only entries go under /space
        space = next(cmd for cmd in d.fake.commands if cmd["name"] == "space")
        sub = next(o for o in space["options"] if o["name"] == "title")
        options = {o["name"]: o.get("required", False) for o in sub["options"]}
        assert options == {"text": True, "space": False}
    elif isinstance(d, TelegramDriver):
        menus = [call for call in d.fake.calls if call.method == "setMyCommands"]
        assert {"command": "title", "description": "Rename the Space"} in menus[-1].params["commands"]
        shown = await d.say(d.group, c.host.uid, "/help", c.host.name)
        assert "/title TEXT — Rename the Space" in shown.splitlines()
    else:
        assert isinstance(d, CliDriver)
        out = d.runner.invoke(d.app, ["cmd", "--help"], env=d.env, terminal_width=400).output
        assert "title --text: Rename the Space (host)" in out


@pytest.mark.parametrize("state", ["live", "scheduled"])
async def test_the_host_renames_the_space(titled: Driver, state: str) -> None:
    d = titled
    c = await make_ctx(d, state)
    result = await d.run(c.host, "title", c.space_id, text=f"Renamed on {d.surface}")
    assert result.ok, f"{d.surface}: {result}"
    assert await _title_of(d, c.space_id) == f"Renamed on {d.surface}"


async def test_a_listener_is_refused_with_the_tables_code(titled: Driver) -> None:
    d = titled
    c = await make_ctx(d, "live")
    result = await d.run(c.listener, "title", c.space_id, text="Mine now")
    assert (result.ok, result.code) == (False, "role.host_required"), f"{d.surface}: {result}"
    assert await _title_of(d, c.space_id) == "Contract night"


@pytest.mark.parametrize("bad", ["", "x" * 101], ids=["empty", "too_long"])
async def test_a_bad_title_is_refused_and_changes_nothing(titled: Driver, bad: str) -> None:
    d = titled
    c = await make_ctx(d, "live")
    args: dict[str, Any] = {"text": bad}
    result = await d.run(c.host, "title", c.space_id, **args)
    codes = {"protocol.bad_argument"} | ({"telegram.usage"} if d.surface == "telegram" else set())  # says how
    assert not result.ok and result.code in codes, f"{d.surface} {bad[:10]!r}: {result}"
    assert await _title_of(d, c.space_id) == "Contract night"
