"""A plugin's records are read through the plugin API's reports (what ``spacebridge audit`` shows),
never through the plugin's internals: the report reads what the plugin wrote to its store."""

from __future__ import annotations

import pytest

from core.errors import NotFound
from core.services import Core
from plugins.api import plugin_store
from plugins.manager import read_report


async def test_a_report_reads_the_plugins_own_records(core: Core) -> None:
    store = plugin_store(core, "moderation")
    for n, who in enumerate(("ann", "bob", "ann")):
        await store.put(f"audit:sp1:{n:017d}:000000", {"who": who, "what": f"act {n}"})
    await store.put("audit:sp2:00000000000000000:000000", {"who": "ann", "what": "elsewhere"})

    rows = await read_report(core, "moderation", "audit", space_id="sp1", limit=10)
    assert [r["what"] for r in rows] == ["act 2", "act 1", "act 0"]  # newest first, that Space only
    by_ann = await read_report(core, "moderation", "audit", space_id="sp1", limit=10, actor="ann")
    assert [r["what"] for r in by_ann] == ["act 2", "act 0"]


@pytest.mark.parametrize(("plugin", "report"), [("moderation", "nope"), ("not_installed", "audit")])
async def test_an_unknown_report_is_refused_by_name(core: Core, plugin: str, report: str) -> None:
    with pytest.raises(NotFound) as e:
        await read_report(core, plugin, report, space_id="sp1")
    assert e.value.code == "plugin.no_report" and e.value.data == {"plugin": plugin, "report": report}
