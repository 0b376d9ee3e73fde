"""Subscriber priority in the raise-hand queue on a real database (SQLite and PostgreSQL): the setting
and each hand's place are saved with the Space, so a restarted process (a new Core on the same
database) shows the same queue, puts the next subscriber in the same place, and restores raise order
when the priority goes off."""

from __future__ import annotations

from datetime import timedelta

from core.bus import InProcessBus
from core.clock import FrozenClock
from core.commands import dispatch
from core.model.accounts import Actor
from core.model.subscription import SubscriptionStatus
from core.services import Core
from core.storage.engine import make_engine, make_sessionmaker
from tests.integration.test_subscriber_badge import _subscribe


async def test_the_queue_order_survives_a_restart(core: Core, clock: FrozenClock, database_url: str) -> None:
    host_acc = await core.ensure_account("web", "host", "Host")
    host = Actor(account_id=host_acc.id, is_community_admin=True)
    space = await core.create_space(host, "Members first")
    people = {n: Actor(account_id=(await core.ensure_account("web", n, n.title())).id)
              for n in ("ann", "sub", "bob", "gold")}
    tier = await core.memberships.create_tier(host, "Basic", 300, "eur")
    await _subscribe(core, tier, people["sub"].account_id, SubscriptionStatus.ACTIVE)
    await _subscribe(core, tier, people["gold"].account_id, SubscriptionStatus.ACTIVE)
    for p in people.values():
        await core.join(p, space.id)
    for name in ("ann", "sub", "bob"):  # all at the same instant: the order is the raise order all the same
        await core.raise_hand(people[name], space.id)
    assert (await dispatch(core, host, "subscriber_priority", space.id, {"on": True})).code == \
        "queue.subscriber_priority_on"
    ids = {n: p.account_id for n, p in people.items()}
    assert (await core.view(space.id)).as_dict()["queue"] == [ids["sub"], ids["ann"], ids["bob"]]

    # another process on the same database, as after a restart
    engine = make_engine(database_url)
    bus = InProcessBus()
    await bus.start()
    try:
        again = Core(make_sessionmaker(engine), bus, FrozenClock(clock.now() + timedelta(minutes=1)))
        view = (await again.view(space.id)).as_dict()
        assert view["subscriber_priority"] is True and view["queue"] == [ids["sub"], ids["ann"], ids["bob"]]
        assert (await dispatch(again, people["gold"], "hand", space.id, {})).result == 2  # behind sub
        assert (await again.view(space.id)).as_dict()["queue"] == [ids["sub"], ids["gold"], ids["ann"], ids["bob"]]
        await dispatch(again, host, "subscriber_priority", space.id, {"on": False})
        assert (await again.view(space.id)).as_dict()["queue"] == [ids["ann"], ids["sub"], ids["bob"], ids["gold"]]
    finally:
        await bus.close()
        await engine.dispose()
    assert (await core.view(space.id)).as_dict()["subscriber_priority"] is False
