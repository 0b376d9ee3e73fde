"""Every table command is reachable over the web socket, with the table's rules for each role."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from core.commands import BUILTINS, Command, Option
from core.model.accounts import Actor
from spacebridge.app import Instance

TIMEOUT_S = 30.0
TABLE_ROLE_REFUSALS = ("role.stage_required", "role.moderator_required", "role.host_required")


def _value(o: Option, person: str) -> Any:
    return {"text": "https://example.org/x" if o.name == "url" else "x", "number": 1, "flag": True,
            "person": person, "emoji": "👏", "when": "+2h", "choice": o.choices[0] if o.choices else ""}[o.kind]


def _args(c: Command, person: str) -> dict[str, Any]:
    return {o.name: _value(o, person) for o in c.options if o.required or o.kind == "person"}


@pytest.mark.parametrize("role", ["host", "listener"])
async def test_every_table_command_answers_over_the_socket_by_the_tables_rules(platform: Instance, role: str) -> None:
    core = platform.core
    host = await core.ensure_account("web", "h", "Hana")
    fan = await core.ensure_account("web", "f", "Finn")
    space = await core.create_space(Actor(account_id=host.id, is_community_admin=True), "Every command")
    me, other = (host, fan) if role == "host" else (fan, host)
    await core.join(Actor(account_id=other.id), space.id)
    token = platform.tokens.issue(space.id, me.id, "listener", core.now())
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{platform.url}/ws/{space.id}") as ws:
        await ws.send_json({"type": "hello", "token": token})
        welcome = await ws.receive_json(timeout=TIMEOUT_S)
        assert welcome["type"] == "welcome"
        offered = {c["name"]: c for c in welcome["commands"]}
        assert {c.name for c in BUILTINS} <= set(offered)
        assert offered["approve"]["least_role"] == "moderator" and offered["approve"]["options"][0]["kind"] == "person"
        answers: dict[str, dict[str, Any]] = {}
        for n, c in enumerate(sorted(BUILTINS, key=lambda c: c.name == "end")):  # end last: it ends the Space
            await ws.send_json({"type": "command", "id": n, "name": c.name, "args": _args(c, other.id)})
            while True:
                reply = await ws.receive_json(timeout=TIMEOUT_S)
                if reply.get("id") == n and reply["type"] in ("ok", "error"):
                    answers[c.name] = reply
                    break
    for c in BUILTINS:
        reply = answers[c.name]
        code = reply.get("code", "")
        assert code not in ("protocol.unknown_command", "protocol.bad_argument", "server.error"), (c.name, reply)
        live = "live" in c.states
        if role == "listener" and c.least_role != "anyone" and live:
            assert code in TABLE_ROLE_REFUSALS, (c.name, reply)  # refused before the core ran, in words
            assert reply["message"] and reply["data"]["command"] == c.name
        if role == "host" and live:
            assert code not in TABLE_ROLE_REFUSALS, (c.name, reply)
        if not live:
            assert code == "command.not_now", (c.name, reply)
    if role == "host":
        assert answers["react"]["type"] == "ok" and answers["react"]["result"] == {"👏": 1}
        assert answers["comment"]["type"] == "ok" and answers["comment"]["result"]["text"] == "x"
        assert answers["end"]["type"] == "ok"
        assert answers["share"]["result"]["links"]["web"].endswith(f"/s/{space.id}")  # ports from the platform
        assert answers["refund"]["code"] == "ticket.none_paid"  # reached the ledger through the ticket desk
        assert answers["ticket"]["code"] == "ticket.not_ticketed"  # a free Space (billing.off: a priced one, no Stripe)
    else:
        assert answers["hand"]["type"] == "ok" and answers["hand"]["result"] == 1
