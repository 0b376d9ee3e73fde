"""Stars tickets (invoice, pre-checkout, successful payment, refund on cancel) and the Mini App's
initData sign-in, as a buyer and the web room see them."""

from __future__ import annotations

import aiohttp

from adapters.telegram.webapp import sign_init_data
from core.model.space import Ticketing
from core.model.ticket import TicketStatus
from tests.integration.telegram.conftest import FAN1, FAN2, GROUP, HOST, TG


async def ticketed_space(tg: TG, price: int = 250, capacity: int | None = None, start: bool = False) -> str:
    await tg.say(GROUP, HOST, '/space new "Paid Masterclass" +1d', name="Hosty")
    space = (await tg.core.list_spaces(states=("scheduled",)))[0]
    community = space.community_id
    assert community is not None
    operator = await tg.actor(HOST, admin=True)
    await tg.core.update_community(operator, community, {"ticketing_allowed": True})
    await tg.core.set_ticketing(operator, space.id, Ticketing(price_minor=price, currency="XTR", capacity=capacity))
    return space.id


async def test_stars_purchase_then_refund_when_the_host_cancels(tg: TG) -> None:
    space_id = await ticketed_space(tg, price=250, capacity=1)
    await tg.say(FAN1, FAN1, "/start")
    mark = len(tg.fake.calls)
    await tg.fake.send_text(GROUP, FAN1, f"/ticket {space_id}")
    invoice = await tg.fake.wait_for(lambda c: c.method == "sendInvoice", after=mark)
    assert invoice.params["chat_id"] == FAN1 and invoice.params["currency"] == "XTR"
    assert invoice.params["prices"] == [{"label": "Ticket", "amount": 250}]
    assert not invoice.params.get("provider_token")
    ticket_id = invoice.params["payload"]
    assert "private chat" in (await tg.fake.reply_to(GROUP, mark)).params["text"]

    # the only seat is held for FAN1: FAN2 is told it is sold out, and nothing is invoiced
    await tg.say(FAN2, FAN2, "/start")
    assert "Sold out" in await tg.say(FAN2, FAN2, f"/ticket {space_id}")
    assert len(tg.fake.sent("sendInvoice")) == 1

    # pre-checkout: a wrong amount or someone else's ticket is refused, the right one accepted
    for user, total in ((FAN1, 1), (FAN2, 250), (FAN1, 250)):
        mark = len(tg.fake.calls)
        await tg.fake.pre_checkout(user, ticket_id, total)
        answer = await tg.fake.wait_for(lambda c: c.method == "answerPreCheckoutQuery", after=mark)
        if (user, total) == (FAN1, 250):
            assert answer.params["ok"] is True
        else:
            assert answer.params["ok"] is False and answer.params["error_message"]
    mark = len(tg.fake.calls)
    await tg.fake.paid(FAN1, ticket_id, 250, "stxCHARGE1")
    confirm = await tg.fake.reply_to(FAN1, mark)
    assert "Ticket confirmed" in confirm.params["text"]
    ticket = await tg.platform.ledger.get(ticket_id)
    assert ticket.status == TicketStatus.PAID and ticket.provider_ref == f"{FAN1}:stxCHARGE1"
    # Telegram may deliver the same update twice: still one paid ticket
    mark = len(tg.fake.calls)
    await tg.fake.paid(FAN1, ticket_id, 250, "stxCHARGE1")
    await tg.fake.reply_to(FAN1, mark)
    assert (await tg.platform.ledger.report(space_id)).sold == 1

    assert "cancelled" in await tg.say(GROUP, HOST, f"/cancel {space_id}")
    await tg.jobs()
    refunds = tg.fake.sent("refundStarPayment")
    assert [(c.params["user_id"], c.params["telegram_payment_charge_id"]) for c in refunds] == [(FAN1, "stxCHARGE1")]
    assert tg.fake.charges["stxCHARGE1"]["refunded"] is True
    assert (await tg.platform.ledger.get(ticket_id)).status == TicketStatus.REFUNDED
    await tg.jobs()
    assert len(tg.fake.sent("refundStarPayment")) == 1


async def test_expired_hold_is_refused_at_pre_checkout(tg: TG) -> None:
    space_id = await ticketed_space(tg)
    await tg.say(FAN1, FAN1, "/start")
    mark = len(tg.fake.calls)
    await tg.fake.send_text(FAN1, FAN1, f"/ticket {space_id}")
    ticket_id = (await tg.fake.wait_for(lambda c: c.method == "sendInvoice", after=mark)).params["payload"]
    tg.clock.advance(minutes=16)
    mark = len(tg.fake.calls)
    await tg.fake.pre_checkout(FAN1, ticket_id, 250)
    answer = await tg.fake.wait_for(lambda c: c.method == "answerPreCheckoutQuery", after=mark)
    assert answer.params["ok"] is False and "time is up" in answer.params["error_message"]


async def test_ticket_needs_a_private_chat_first(tg: TG) -> None:
    space_id = await ticketed_space(tg)
    tg.fake.blocked.add(FAN2)  # never started the bot: Telegram refuses the invoice DM
    text = await tg.say(GROUP, FAN2, f"/ticket {space_id}")
    assert "private chat with me first" in text and f"t.me/{tg.fake.username}" in text
    report = await tg.platform.ledger.report(space_id)
    assert report.sold == 0 and report.held == 0


async def test_mini_app_exchanges_init_data_for_a_join_link(tg: TG) -> None:
    await tg.say(GROUP, HOST, '/space new "Mini"', name="Hosty")
    space = (await tg.core.list_spaces(states=("live",)))[0]
    now = int(tg.clock.now().timestamp())
    token = tg.fake.token

    def init(user_id: int, auth_date: int, bot_token: str = token) -> str:
        return sign_init_data({"user": f'{{"id":{user_id},"first_name":"Ann","last_name":"Lee"}}',
                               "auth_date": str(auth_date), "query_id": "AAE"}, bot_token)

    async with aiohttp.ClientSession(tg.platform.url) as http:
        async with http.get(f"/tg/app?space={space.id}") as r:
            assert r.status == 200 and "/tg/static/app.js" in await r.text()
        async with http.get("/tg/static/app.js") as r:
            assert r.status == 200 and "tgWebAppData" in await r.text()
        async with http.post("/api/telegram/webapp", json={"init_data": init(555, now), "space_id": space.id}) as r:
            body = await r.json()
            assert r.status == 200, body
        grant = tg.platform.tokens.verify(body["token"], tg.clock.now(), space.id)
        assert grant.role == "listener" and body["url"] == f"/s/{space.id}#t={body['token']}"
        ann = await tg.core.ensure_account("telegram", "555", "?")
        assert grant.account_id == ann.id and ann.display_name == "Ann Lee"
        cases = {
            "forged": (init(555, now, bot_token="123:another-bot"), 403, "not genuine"),
            "tampered": (init(555, now).replace("555", "556"), 403, "not genuine"),
            "expired": (init(555, now - 2 * 3600), 403, "too old"),
            "malformed": ("hash=&&&", 400, "damaged"),
            "missing": ("", 400, "Join button"),
        }
        for name, (data, status, words) in cases.items():
            async with http.post("/api/telegram/webapp", json={"init_data": data, "space_id": space.id}) as r:
                body = await r.json()
                assert r.status == status, name
                assert words in body["error"]["message"], name
        async with http.post("/api/telegram/webapp", data=b"not json") as r:
            assert r.status == 400
        await tg.say(GROUP, HOST, "/end")
        async with http.post("/api/telegram/webapp", json={"init_data": init(555, now), "space_id": space.id}) as r:
            assert r.status == 409 and "ended" in (await r.json())["error"]["message"]
