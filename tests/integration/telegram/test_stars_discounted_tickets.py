"""Discounted tickets for subscribers, in Telegram Stars: the host's Stars subscriber at the tier gets
a /ticket invoice for the discounted Stars amount (rounded half up), pre-checkout wants that amount,
the payment settles at it and the cancel refunds it; someone who does not subscribe is invoiced the
full price."""

from __future__ import annotations

from dataclasses import replace

from core.model.space import Ticketing
from core.model.ticket import TicketStatus
from tests.integration.telegram.conftest import FAN1, FAN2, GROUP, HOST, TG

DAY = 86_400


async def test_a_stars_subscriber_is_invoiced_the_subscriber_price(tg: TG) -> None:
    host = replace(await tg.actor(HOST, "Hostess"), is_operator=True)
    tier = await tg.core.memberships.create_tier(host, "Inner circle", 500, "eur")
    tier = await tg.core.memberships.set_stars(host, tier.id, 300)
    await tg.say(GROUP, HOST, '/space new "Paid Masterclass" +1d', name="Hostess")
    space = (await tg.core.list_spaces(states=("scheduled",)))[0]
    assert space.community_id is not None
    await tg.core.update_community(host, space.community_id, {"ticketing_allowed": True})
    await tg.core.set_ticketing(host, space.id, Ticketing(price_minor=250, currency="XTR", capacity=None,
                                                          discount_tier_id=tier.id, discount_percent=33))
    for user in (FAN1, FAN2):
        await tg.say(user, user, "/start")

    mark = len(tg.fake.calls)  # FAN1 subscribes in Stars
    await tg.fake.send_text(FAN1, FAN1, f"/subscribe {tier.id}")
    payload = (await tg.fake.wait_for(lambda c: c.method == "createInvoiceLink", after=mark)).params["payload"]
    now = int(tg.clock.now().timestamp())
    mark = len(tg.fake.calls)
    await tg.fake.subscription_paid(FAN1, payload, 300, "stxSUB1", now + 30 * DAY, date=now)
    await tg.fake.reply_to(FAN1, mark)

    invoices = {}
    for user in (FAN1, FAN2):
        mark = len(tg.fake.calls)
        await tg.fake.send_text(user, user, f"/ticket {space.id}")
        invoices[user] = (await tg.fake.wait_for(lambda c: c.method == "sendInvoice", after=mark)).params
    assert invoices[FAN1]["prices"] == [{"label": "Ticket (subscriber price)", "amount": 168}]  # 250 less 33 %
    assert invoices[FAN2]["prices"] == [{"label": "Ticket", "amount": 250}]

    ticket_id = invoices[FAN1]["payload"]
    for total, ok in ((250, False), (168, True)):  # pre-checkout wants the subscriber price
        mark = len(tg.fake.calls)
        await tg.fake.pre_checkout(FAN1, ticket_id, total)
        answer = await tg.fake.wait_for(lambda c: c.method == "answerPreCheckoutQuery", after=mark)
        assert answer.params["ok"] is ok
    mark = len(tg.fake.calls)
    await tg.fake.paid(FAN1, ticket_id, 168, "stxTICKET1")
    assert "Ticket confirmed" in (await tg.fake.reply_to(FAN1, mark)).params["text"]
    report = await tg.platform.ledger.report(space.id)
    assert (report.sold, report.gross_minor) == (1, 168)

    assert "cancelled" in await tg.say(GROUP, HOST, f"/cancel {space.id}")
    await tg.jobs()
    assert [c.params["telegram_payment_charge_id"] for c in tg.fake.sent("refundStarPayment")] == ["stxTICKET1"]
    assert (await tg.platform.ledger.get(ticket_id)).status == TicketStatus.REFUNDED
    report = await tg.platform.ledger.report(space.id)
    assert report.refunded_minor == 168
