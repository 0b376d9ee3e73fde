"""Linking two accounts of one person merges them into the code's issuer; nothing is lost, and a
block follows the person (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing.ledger import Ledger
from core.errors import Conflict, Forbidden, NotFound
from core.kv import KeyValueStore
from core.messages import describe
from core.model.accounts import Actor
from core.model.space import Role, SpaceState, Ticketing
from core.services import Core


async def acct(core: Core, platform: str, ext: str, *, operator: bool = False) -> Actor:
    a = await core.ensure_account(platform, ext, f"{platform}:{ext}")
    return Actor(account_id=a.id, platform=platform, is_operator=operator)


async def link(core: Core, issuer: Actor, redeemer: Actor) -> Actor:
    """``redeemer`` redeems a code ``issuer`` got: the issuer's account is the one left."""
    code = await core.issue_link_code(issuer)
    merged = await core.redeem_link_code(redeemer, code.code)
    assert merged.id == issuer.account_id
    return Actor(account_id=merged.id, platform=redeemer.platform)


async def test_a_blocked_alt_stays_blocked_whichever_side_redeems(core: Core) -> None:
    host = await acct(core, "web", "host", operator=True)
    space = await core.create_space(host, "Town hall")
    for side in ("alt redeems", "main redeems"):
        main = await acct(core, "telegram", f"main-{side}")
        alt = await acct(core, "discord", f"alt-{side}")
        await core.join(alt, space.id)
        await core.remove(host, space.id, alt.account_id, block=True, reason="spam")
        await core.join(main, space.id)  # the main account is not blocked yet
        await core.leave(main, space.id)
        person = await link(core, main, alt) if side == "alt redeems" else await link(core, alt, main)
        with pytest.raises(Forbidden, match="space.blocked"):
            await core.join(person, space.id)
        # every identity of the person is now the one blocked account
        for platform, ext in (("telegram", f"main-{side}"), ("discord", f"alt-{side}")):
            again = await core.ensure_account(platform, ext, "x")
            assert again.id == person.account_id
            with pytest.raises(Forbidden, match="space.blocked"):
                await core.join(Actor(account_id=again.id, platform=platform), space.id)


async def test_a_host_links_and_their_spaces_keep_working(core: Core) -> None:
    dc_host = await acct(core, "discord", "host", operator=True)
    other_host = await acct(core, "web", "other", operator=True)
    fan = await acct(core, "web", "fan")
    await core.follow(fan, dc_host.account_id)
    live = await core.create_space(dc_host, "Live now")
    later = await core.create_space(dc_host, "Next week", start_at=core.now() + timedelta(days=7))
    elsewhere = await core.create_space(other_host, "Guest spot")
    await core.join(dc_host, elsewhere.id)
    await core.promote(other_host, elsewhere.id, dc_host.account_id, Role.COHOST)
    await core.pin(dc_host, live.id, "Agenda", url="https://example.org/agenda")

    tg = await acct(core, "telegram", "host")
    me = await link(core, tg, dc_host)  # no IntegrityError: the hosted Spaces move with the person

    with pytest.raises(NotFound):
        await core.account(dc_host.account_id)
    for s in (live, later):
        assert (await core.view(s.id)).space.host_id == me.account_id
    view = await core.view(live.id)
    assert [p.title for p in view.space.pins] == ["Agenda"]
    assert (await core.view(elsewhere.id)).space.cohosts == [me.account_id]
    assert await core.follower_count(me.account_id) == 1
    # the survivor runs their Spaces with no operator rights: they are the host now
    await core.pin(me, live.id, "Slides", url="https://example.org/slides")
    await core.start_space(me, later.id)
    await core.end_space(me, live.id)
    assert (await core.view(live.id)).space.state == SpaceState.ENDED
    assert (await core.view(later.id)).space.state == SpaceState.LIVE


async def test_paid_tickets_reminders_and_attendance_survive(core: Core) -> None:
    ledger = Ledger(core)
    host = await acct(core, "web", "creator", operator=True)
    paid = await core.create_space(host, "Paid AMA", start_at=core.now() + timedelta(days=1))
    await core.set_ticketing(host, paid.id, Ticketing(price_minor=500, currency="eur", capacity=10))
    both = await core.create_space(host, "Both bought", start_at=core.now() + timedelta(days=2))
    await core.set_ticketing(host, both.id, Ticketing(price_minor=700, currency="eur", capacity=10))
    free = await core.create_space(host, "Free chat", start_at=core.now() + timedelta(days=3))
    live = await core.create_space(host, "Live")

    main = await acct(core, "telegram", "main")
    alt = await acct(core, "web", "alt")
    t1 = await ledger.hold(alt, paid.id, "stripe")
    await ledger.settle(t1.id, paid=True)
    for who in (main, alt):
        t = await ledger.hold(who, both.id, "stripe")
        await ledger.settle(t.id, paid=True)
    await core.set_reminder(alt, free.id)
    await core.join(alt, live.id)
    await core.join(main, live.id)
    assert (await core.view(live.id)).listener_count == 3

    me = await link(core, main, alt)

    async with core.uow() as uow:
        assert await uow.tickets.has_paid(paid.id, me.account_id)
        assert len(await uow.tickets.paid_ids(both.id)) == 2  # both kept (and reported), none lost
        assert await uow.tickets.holders(both.id) == [me.account_id, me.account_id]
        assert await uow.spaces.reminder_accounts(free.id) == [me.account_id]
        assert await uow.spaces.is_present(live.id, me.account_id)
    assert (await core.view(live.id)).listener_count == 2  # host + the person, not a ghost alt
    report = await ledger.report(paid.id)
    assert report.sold == 1
    await core.start_space(host, paid.id)
    assert (await core.join(me, paid.id)).role == Role.LISTENER  # the alt's ticket lets the person in


async def test_follows_are_merged_without_doubles_or_self_follows(core: Core) -> None:
    main = await acct(core, "telegram", "main")
    alt = await acct(core, "discord", "alt")
    fan = await acct(core, "web", "fan")
    star = await acct(core, "web", "star")
    for follower, followed in ((fan, main), (fan, alt), (alt, main), (main, alt), (main, star), (alt, star)):
        await core.follow(follower, followed.account_id)
    assert await core.follower_count(main.account_id) == 2

    me = await link(core, main, alt)

    assert await core.follower_count(me.account_id) == 1  # the fan once; not the person themselves
    assert await core.follower_count(star.account_id) == 1
    async with core.uow() as uow:
        assert await uow.accounts.followers(me.account_id) == [fan.account_id]
        assert await uow.accounts.is_following(me.account_id, star.account_id)
    with pytest.raises(Conflict, match="link.already_linked"):
        await link(core, Actor(account_id=me.account_id, platform="telegram"), me)


async def test_plugin_data_keyed_by_account_moves(core: Core) -> None:
    host = await acct(core, "web", "host", operator=True)
    space = await core.create_space(host, "Recorded")
    main = await acct(core, "telegram", "main")
    alt = await acct(core, "web", "alt")
    rec = KeyValueStore(core.sessionmaker, core.clock, "recording")
    audit = KeyValueStore(core.sessionmaker, core.clock, "moderation")
    await rec.put(f"optout:{space.id}:{alt.account_id}", {"at": "2024-01-01T00:00:00+00:00"})
    await audit.put(f"audit:{space.id}:00000000000000001:000001",
                    {"who": host.account_id, "what": "blocked", "whom": alt.account_id, "why": "spam"})

    me = await link(core, main, alt)

    assert [e.key for e in await rec.scan(f"optout:{space.id}:")] == [f"optout:{space.id}:{me.account_id}"]
    [entry] = await audit.scan(f"audit:{space.id}:")
    assert entry.value["whom"] == me.account_id and entry.value["who"] == host.account_id


async def test_two_different_payout_accounts_refuse_the_link_and_change_nothing(core: Core) -> None:
    ledger = Ledger(core)
    main = await acct(core, "telegram", "main")
    alt = await acct(core, "discord", "alt")
    await ledger.set_payout_account(main.account_id, "acct_main")
    await ledger.set_payout_account(alt.account_id, "acct_alt")
    code = await core.issue_link_code(main)
    with pytest.raises(Conflict) as e:
        await core.redeem_link_code(alt, code.code)
    assert e.value.code == "link.two_payout_accounts"
    assert "acct_" not in describe(e.value)
    assert await ledger.payout_account(alt.account_id) == "acct_alt"
    assert {i.platform for i in await core.identities(main.account_id)} == {"telegram"}

    # one payout account is kept whichever side had it
    await ledger.set_payout_account(main.account_id, "acct_alt")
    me = await link(core, main, alt)
    assert await ledger.payout_account(me.account_id) == "acct_alt"
    other = await acct(core, "web", "other")
    third = await acct(core, "discord", "third")
    await ledger.set_payout_account(third.account_id, "acct_third")
    kept = await link(core, other, third)
    assert await ledger.payout_account(kept.account_id) == "acct_third"


@pytest.mark.parametrize("bad", [None, 5, "", "   ", "ÄÖÜ", "A" * 17, "AB-CD"])
async def test_bad_codes_are_refused_in_words(core: Core, bad: object) -> None:
    alt = await acct(core, "discord", "alt")
    with pytest.raises(Exception) as e:
        await core.redeem_link_code(alt, bad)  # type: ignore[arg-type]
    assert getattr(e.value, "code", None) == "link.bad_code"
