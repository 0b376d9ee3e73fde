"""Every table command reaches Discord, within Discord's limits (25 subcommands a command, 100 commands,
name and description lengths): a new table command either lands somewhere a member can type it, or
the bot refuses to start, naming the limit; it never silently vanishes from the sync."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.discord.layout import GROUPS, MAX_OPTIONS, OWN, layout, leaves, problems, usage
from core.commands import BUILTIN_TABLE, BUILTINS
from tests.integration.discord.conftest import DC
from tests.integration.discord.test_flows import live, setup_guild


def _sub(name: str, description: str = "A subcommand", **extra: Any) -> dict[str, Any]:
    return {"type": 1, "name": name, "description": description, **extra}


async def test_the_synced_commands_offer_every_table_command_within_discords_limits(dc: DC) -> None:
    synced = dc.fake.commands  # what Discord holds after the bot's bulk overwrite
    assert problems(synced) == []
    paths = leaves(synced)
    assert {c.name for c in BUILTINS} | set(OWN) <= set(paths), sorted({c.name for c in BUILTINS} - set(paths))
    assert paths["approve"] == "/stage approve" and paths["hand"] == "/space hand" and paths["follow"] == "/follow"
    space = next(c for c in synced if c["name"] == "space")
    assert 1 <= len(space["description"]) <= 100 and len(space["options"]) <= MAX_OPTIONS
    comment = next(o for o in next(c for c in synced if c["name"] == "space")["options"] if o["name"] == "comment")
    assert comment["description"] == BUILTIN_TABLE.get("comment").summary  # type: ignore[union-attr]
    assert [(o["name"], o.get("required", False)) for o in comment["options"]] == [("text", True), ("space", False)]


async def test_a_stage_command_from_the_table_runs_under_its_new_group(dc: DC) -> None:
    await setup_guild(dc)
    space_id = await live(dc)
    fan = await dc.actor(dc.fan, "Finn")
    await dc.core.join(fan, space_id)
    await dc.core.raise_hand(fan, space_id)
    r = await dc.ask(dc.host, "stage", "clear_queue")
    assert "⚠️" not in r["content"] and not r.get("flags", 0) & 64, r  # moderation is answered in the open
    assert not (await dc.core.view(space_id)).space.hands
    r = await dc.ask(dc.fan, "stage", "mute_all")
    assert "⚠️" in r["content"] and "Only the host or a co-host" in r["content"], r


def test_the_layout_places_every_table_command_once_and_no_group_overflows() -> None:
    placed = layout(BUILTINS)
    names = [n for group in placed.values() for n in group]
    assert sorted(names) == sorted([c.name for c in BUILTINS] + list(OWN)), "each command exactly once"
    assert set(placed) - {None} == set(GROUPS)
    for group, members in placed.items():
        if group is not None:
            assert len(members) <= MAX_OPTIONS, f"/{group} holds {len(members)}: move some (layout.PLACES)"


def test_problems_name_each_limit_a_payload_breaks() -> None:
    too_many = [_sub(f"c{i}") for i in range(MAX_OPTIONS + 1)]
    found = problems([{"type": 1, "name": "space", "description": "Spaces", "options": too_many}])
    assert found == ["/space: 26 options or subcommands, Discord allows 25"]
    found = problems([{"type": 1, "name": f"cmd{i}", "description": "x"} for i in range(101)])
    assert found == ["101 top-level commands, Discord allows 100"]
    found = problems([{"type": 1, "name": "Space", "description": "x" * 101, "options": [
        {"type": 3, "name": "later", "description": "optional"},
        {"type": 3, "name": "first", "description": "required", "required": True}]}])
    assert found == ["/Space: name 'Space' must be 1-32 lowercase letters, digits, - or _",
                     "/Space: description must be 1-100 characters (is 101)",
                     "/Space first: a required option must come before the optional ones"]
    nested = {"type": 1, "name": "space", "description": "x", "options": [
        _sub("a", options=[_sub("b")])]}
    assert problems([nested]) == ["/space a b: nested deeper than Discord allows (command, group, subcommand)"]
    long_text = [_sub(f"c{i}", "d" * 100, options=[
        {"type": 3, "name": f"o{j}", "description": "e" * 100} for j in range(4)]) for i in range(20)]
    found = problems([{"type": 1, "name": "space", "description": "x", "options": long_text}])
    assert len(found) == 1 and "characters of names and descriptions" in found[0]


async def test_the_docs_list_the_commands_exactly_as_discord_shows_them(dc: DC) -> None:
    listed = usage(dc.fake.commands)
    doc = (Path(__file__).parents[3] / "docs" / "discord.md").read_text()
    assert listed in doc, "docs/discord.md's command list is stale; it should read:\n" + listed
