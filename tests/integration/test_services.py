"""Core use cases against a real database (SQLite file and PostgreSQL), as users meet them."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from core.bus import InProcessBus
from core.clock import FrozenClock
from core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, RateLimited
from core.messages import describe
from core.model.accounts import Actor
from core.model.space import Role, SpaceState
from core.services import Core
from core.storage.engine import make_engine, make_sessionmaker


async def person(core: Core, name: str) -> Actor:
    acc = await core.ensure_account("web", name, name)
    return Actor(account_id=acc.id, platform="web")


async def host_with_followers(core: Core, n: int = 600) -> Actor:
    host = await person(core, "host")
    async with core.uow() as uow:
        fans = []
        for i in range(n):
            a = await core.ensure_account("telegram", f"fan{i}", f"fan{i}") if i < 3 else None
            fans.append(a.id if a else None)
        from core.model.accounts import Account
        for i in range(3, n):
            acc = Account(id=f"fan{i:05d}", display_name=f"fan{i}", created_at=core.now())
            await uow.accounts.add(acc)
            fans[i] = acc.id
        await uow.session.flush()
        await uow.accounts.bulk_follow(host.account_id, [f for f in fans if f], core.now())
        await uow.commit()
    return host


async def snapshot(core: Core, space_id: str) -> dict[str, object]:
    d = (await core.view(space_id)).as_dict()
    d.pop("reactions")
    return d


async def test_eligibility_refusal_says_what_is_missing(core: Core) -> None:
    newbie = await person(core, "newbie")
    for i in range(3):
        fan = await person(core, f"f{i}")
        await core.follow(fan, newbie.account_id)
    with pytest.raises(Forbidden) as e:
        await core.create_space(newbie, "My first Space")
    assert describe(e.value) == "You cannot do that here yet: needs 600 followers, has 3."
    assert await core.list_spaces() == []
    admin = Actor(account_id=newbie.account_id, is_community_admin=True)
    space = await core.create_space(admin, "Admin override")
    assert space.state == SpaceState.LIVE


async def test_community_rules_decide(core: Core) -> None:
    c = await core.ensure_community("discord", "guild1", "Guild")
    anyone = await person(core, "anyone")
    with pytest.raises(Forbidden, match="community.admin_required"):
        await core.update_community(anyone, c.id, {"host_rule": {"kind": "everyone"}})
    admin = Actor(account_id=anyone.account_id, platform="discord", is_community_admin=True)
    with pytest.raises(Invalid, match="community.bad_settings"):
        await core.update_community(admin, c.id, {"host_rule": {"kind": "followers", "min": -5}})
    assert (await core.community(c.id)).settings.host_rule.kind == "followers"
    await core.update_community(admin, c.id, {"host_rule": {"kind": "platform_role", "any_of": ["hosts"]}})
    with pytest.raises(Forbidden) as e:
        await core.create_space(anyone, "t", community_id=c.id)
    assert "needs one of the roles hosts" in describe(e.value)
    ok = Actor(account_id=anyone.account_id, platform="discord", platform_roles=frozenset({"hosts"}))
    assert (await core.create_space(ok, "t", community_id=c.id)).community_id == c.id


async def test_schedule_rules_and_bad_input_change_nothing(core: Core, clock: FrozenClock) -> None:
    host = await host_with_followers(core)
    now = clock.now()
    for bad, code in ((dict(title="x" * 121), "space.title_length"),
                      (dict(title="t", start_at=now - timedelta(minutes=5)), "space.start_in_past"),
                      (dict(title="t", start_at=now + timedelta(days=31)), "space.start_too_far"),
                      (dict(title="t", visibility="secret"), "space.bad_visibility")):
        with pytest.raises(Invalid) as e:
            await core.create_space(host, **bad)  # type: ignore[arg-type]
        assert e.value.code == code
    assert await core.list_spaces(states=["live", "scheduled", "ended", "cancelled"]) == []
    for i in range(10):
        await core.create_space(host, f"s{i}", start_at=now + timedelta(days=1, hours=i))
    with pytest.raises(Conflict, match="space.too_many_scheduled"):
        await core.create_space(host, "eleventh", start_at=now + timedelta(days=2))
    assert len(await core.list_spaces(states=["scheduled"])) == 10
    with pytest.raises(NotFound, match="space.not_found"):
        await core.start_space(host, "nope")


async def test_live_space_flow(core: Core) -> None:
    host = await host_with_followers(core)
    space = await core.create_space(host, "Town hall", topics=["news"])
    alice, bob = await person(core, "alice"), await person(core, "bob")
    r = await core.join(alice, space.id)
    assert r.role == Role.LISTENER and r.listener_count == 2
    await core.join(bob, space.id)
    assert await core.raise_hand(alice, space.id) == 1
    assert await core.raise_hand(bob, space.id) == 2
    with pytest.raises(Conflict, match="hand.already_raised"):
        await core.raise_hand(alice, space.id)
    with pytest.raises(Forbidden, match="role.moderator_required"):
        await core.approve(bob, space.id, alice.account_id)
    await core.approve(host, space.id, alice.account_id)
    v = await core.view(space.id)
    assert v.space.speakers == [alice.account_id] and [h.account_id for h in v.space.hands] == [bob.account_id]
    await core.leave(bob, space.id)
    v = await core.view(space.id)
    assert v.space.hands == [] and v.listener_count == 2
    await core.pin(host, space.id, "Agenda", url="https://example.org/agenda")
    with pytest.raises(Forbidden):
        await core.pin(bob, space.id, "spam", url="https://spam.example")
    await core.end_space(host, space.id)
    with pytest.raises(Conflict, match="space.ended"):
        await core.join(bob, space.id)
    with pytest.raises(Conflict):
        await core.raise_hand(bob, space.id)
    await asyncio.sleep(0)
    await core.bus.drain()  # type: ignore[attr-defined]
    names = core.recorder.names()  # type: ignore[attr-defined]
    for expected in ("space.scheduled", "space.started", "participant.joined", "hand.raised", "role.changed",
                     "hand.lowered", "participant.left", "pin.added", "space.ended"):
        assert expected in names


async def test_block_keeps_them_out_of_the_hosts_spaces(core: Core) -> None:
    host = await host_with_followers(core)
    troll = await person(core, "troll")
    s1 = await core.create_space(host, "One")
    await core.join(troll, s1.id)
    await core.remove(host, s1.id, troll.account_id, block=True, reason="spam")
    assert (await core.view(s1.id)).listener_count == 1
    with pytest.raises(Forbidden, match="space.blocked"):
        await core.join(troll, s1.id)
    await core.end_space(host, s1.id)
    s2 = await core.create_space(host, "Two")
    with pytest.raises(Forbidden, match="space.blocked"):
        await core.join(troll, s2.id)
    with pytest.raises(Forbidden, match="space.blocked"):
        await core.react(troll, s2.id, "👍")


async def test_wrong_role_changes_nothing(core: Core) -> None:
    host = await host_with_followers(core)
    space = await core.create_space(host, "Guarded")
    alice, mallory = await person(core, "alice"), await person(core, "mallory")
    await core.join(alice, space.id)
    await core.join(mallory, space.id)
    await core.raise_hand(alice, space.id)
    before = await snapshot(core, space.id)
    attempts = [
        core.end_space(mallory, space.id), core.approve(mallory, space.id, alice.account_id),
        core.deny(mallory, space.id, alice.account_id), core.promote(mallory, space.id, mallory.account_id, "cohost"),
        core.mute(mallory, space.id, host.account_id), core.remove(mallory, space.id, alice.account_id, block=True),
        core.pin(mallory, space.id, "x", url="https://x.y"), core.set_captions(mallory, space.id, True),
        core.clear_queue(mallory, space.id), core.invite(mallory, space.id, alice.account_id),
        core.cancel_space(mallory, space.id), core.promote(host, space.id, alice.account_id, "overlord"),
    ]
    for coro in attempts:
        with pytest.raises(DomainError):
            await coro
    assert await snapshot(core, space.id) == before
    await core.join(alice, space.id)  # still allowed in: nobody blocked her


async def test_race_for_the_last_seat(core: Core) -> None:
    host = await host_with_followers(core)
    space = await core.create_space(host, "Full house")
    co = await person(core, "co")
    await core.join(co, space.id)
    await core.promote(host, space.id, co.account_id, "cohost")
    people = [await person(core, f"p{i}") for i in range(11)]
    for p in people:
        await core.join(p, space.id)
        await core.raise_hand(p, space.id)
    for p in people[:9]:
        await core.approve(host, space.id, p.account_id)
    results = await asyncio.gather(core.approve(host, space.id, people[9].account_id),
                                   core.approve(co, space.id, people[10].account_id), return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], Conflict) and errors[0].code == "stage.full"
    assert len((await core.view(space.id)).space.speakers) == 10


async def test_reactions(core: Core) -> None:
    host = await host_with_followers(core)
    space = await core.create_space(host, "React")
    fan = await person(core, "fan")
    with pytest.raises(Invalid, match="reaction.not_an_emoji"):
        await core.react(fan, space.id, "lol")
    for _ in range(3):
        tallies = await core.react(fan, space.id, "👏")
    assert tallies == {"👏": 3}
    with pytest.raises(RateLimited):
        for _ in range(20):
            await core.react(fan, space.id, "💜")


async def test_link_codes(core: Core, clock: FrozenClock) -> None:
    tg = await core.ensure_account("telegram", "42", "Ann on TG")
    dc = await core.ensure_account("discord", "99", "Ann on DC")
    fan = await person(core, "fan")
    await core.follow(fan, dc.id)
    code = await core.issue_link_code(Actor(account_id=tg.id, platform="telegram"))
    with pytest.raises(Invalid, match="link.same_platform"):
        await core.redeem_link_code(Actor(account_id=tg.id, platform="telegram"), code.code)
    # the failed attempt consumed nothing: a code is single use only once redeemed
    code = await core.issue_link_code(Actor(account_id=tg.id, platform="telegram"))
    merged = await core.redeem_link_code(Actor(account_id=dc.id, platform="discord"), code.code)
    assert merged.id == tg.id
    assert {i.platform for i in await core.identities(tg.id)} == {"telegram", "discord"}
    assert await core.follower_count(tg.id) == 1
    with pytest.raises(Invalid, match="link.code_invalid"):
        await core.redeem_link_code(Actor(account_id=fan.account_id, platform="web"), code.code)
    late = await core.issue_link_code(Actor(account_id=fan.account_id, platform="web"))
    clock.advance(minutes=11)
    with pytest.raises(Invalid, match="link.code_invalid"):
        await core.redeem_link_code(Actor(account_id=tg.id, platform="telegram"), late.code)


async def test_nothing_lost_across_restart(database_url: str, clock: FrozenClock) -> None:
    async def fresh() -> tuple[Core, object]:
        engine = make_engine(database_url)
        return Core(make_sessionmaker(engine), InProcessBus(), clock), engine

    core1, engine1 = await fresh()
    host = await host_with_followers(core1)
    space = await core1.create_space(host, "Survives")
    fan = await person(core1, "fan")
    await core1.join(fan, space.id)
    await core1.raise_hand(fan, space.id)
    await core1.pin(host, space.id, "Doc", url="https://example.org/doc")
    later = await core1.create_space(host, "Later", start_at=clock.now() + timedelta(days=3))
    await core1.set_reminder(fan, later.id)
    await engine1.dispose()  # type: ignore[attr-defined]

    core2, engine2 = await fresh()
    v = await core2.view(space.id)
    assert v.space.state == SpaceState.LIVE and [h.account_id for h in v.space.hands] == [fan.account_id]
    assert [p.title for p in v.space.pins] == ["Doc"] and v.listener_count == 2
    async with core2.uow() as uow:
        assert await uow.spaces.reminder_accounts(later.id) == [fan.account_id]
    await engine2.dispose()  # type: ignore[attr-defined]


async def test_tickets_gate_the_door(core: Core) -> None:
    from core.model.space import Ticketing
    from core.storage.tables import TicketRow

    host = await host_with_followers(core)
    later = await core.create_space(host, "Paid talk", start_at=core.now() + timedelta(hours=1))
    with pytest.raises(Forbidden, match="ticket.not_allowed_here"):
        await core.set_ticketing(host, later.id, Ticketing(price_minor=500, currency="usd", capacity=50))
    op = Actor(account_id=host.account_id, is_operator=True)
    with pytest.raises(Invalid, match="ticket.bad_price"):
        await core.set_ticketing(op, later.id, Ticketing(price_minor=0, currency="usd", capacity=50))
    await core.set_ticketing(op, later.id, Ticketing(price_minor=500, currency="usd", capacity=50))
    assert (await core.view(later.id)).space.ticketing.currency == "USD"  # type: ignore[union-attr]
    await core.start_space(host, later.id)
    buyer, freeloader = await person(core, "buyer"), await person(core, "free")
    async with core.uow() as uow:
        now = core.now()
        uow.session.add(TicketRow(id="t1", space_id=later.id, account_id=buyer.account_id, status="paid",
                                  provider="stripe", amount_minor=500, currency="USD", hold_expires_at=None,
                                  provider_ref="pi_1", created_at=now, updated_at=now))
        await uow.commit()
    with pytest.raises(Forbidden) as e:
        await core.join(freeloader, later.id)
    assert e.value.code == "ticket.required" and describe(e.value) == "This Space needs a ticket."
    assert (await core.join(buyer, later.id)).role == Role.LISTENER


async def test_share_and_captions(core: Core) -> None:
    host = await host_with_followers(core)
    space = await core.create_space(host, "Shared")
    share = await core.share(space.id, {"web": f"https://sb.example/s/{space.id}", "telegram": "https://t.me/x"})
    assert "Shared — hosted by host (live now)" in share.text() and "web: https://sb.example" in share.text()
    assert not await core.add_caption(space.id, host.account_id, "not on yet", 0.0, 1.0)
    await core.set_captions(host, space.id, True)
    assert await core.add_caption(space.id, host.account_id, "  hello   world ", 1.0, 2.0)
    assert [c["text"] for c in await core.recent_captions(space.id)] == ["hello world"]
    await core.end_space(host, space.id)
    with pytest.raises(Conflict, match="space.closed"):
        await core.share(space.id, {})


async def test_reminder_only_for_scheduled(core: Core) -> None:
    host = await host_with_followers(core)
    live = await core.create_space(host, "Now")
    fan = await person(core, "fan")
    with pytest.raises(Conflict, match="reminder.not_scheduled"):
        await core.set_reminder(fan, live.id)
    later = await core.create_space(host, "Later", start_at=core.now() + timedelta(days=1))
    assert await core.set_reminder(fan, later.id) is True
    assert await core.set_reminder(fan, later.id) is False
    assert await core.set_reminder(fan, later.id, on=False) is True


async def test_first_contact_race_makes_one_account(core: Core) -> None:
    accounts = await asyncio.gather(*(core.ensure_account("telegram", "555", "Racer") for _ in range(5)))
    assert len({a.id for a in accounts}) == 1
    with pytest.raises(Invalid, match="platform.unknown"):
        await core.ensure_account("myspace", "1", "x")
