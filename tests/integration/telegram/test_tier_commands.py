"""A creator's tiers from Telegram (issue 19), through the unmodified python-telegram-bot and the fake
Bot API: /tier_create, /tiers, /tier_stars and /tier_archive in private chat make the same calls as
the CLI and the studio, refuse what they refuse in the core's words and change nothing then; a tier
made here is on sale at once (/subscribe sends its Stars invoice)."""

from __future__ import annotations

from tests.integration.telegram.conftest import FAN1, GROUP, HOST, TG


async def tiers_of(tg: TG, user: int) -> list[tuple[str, int, str, int | None, bool]]:
    account = (await tg.actor(user)).account_id
    return [(t.name, t.price_minor, t.currency, t.stars, t.archived)
            for t in await tg.core.memberships.tiers(account, archived=True)]


async def test_a_creator_makes_lists_prices_and_archives_tiers_in_private_chat(tg: TG) -> None:
    assert "You sell no subscription tiers yet" in await tg.say(HOST, HOST, "/tiers")

    made = await tg.say(HOST, HOST, '/tier_create "Inner circle" 4.50 eur Members-only Spaces & Q&A')
    assert "<b>Inner circle</b> is on sale at 4.50 EUR/month" in made and "/tier_stars" in made
    assert await tiers_of(tg, HOST) == [("Inner circle", 450, "EUR", None, False)]
    [inner] = await tg.core.memberships.tiers((await tg.actor(HOST)).account_id)

    # the CLI's and the studio's refusals, in the core's words, and nothing changes
    refusals = {
        "/tier_create Fans 3 usd": "All your tiers are priced in EUR; this one is in USD.",
        "/tier_create Fans 0 eur": "A tier's monthly price must be above zero.",
        "/tier_create Fans five eur": "A tier's monthly price must be above zero.",
        '/tier_create "inner CIRCLE" 9 eur': "You already have a tier called inner CIRCLE.",
        "/tier_create Fans 3": "Usage: /tier_create NAME PRICE CURRENCY",
        f"/tier_stars {inner.id} 0": "A tier's price in Stars is 1 to 10000 a month (not 0).",
        f"/tier_stars {inner.id} 20000": "A tier's price in Stars is 1 to 10000 a month (not 20000).",
        f"/tier_stars {inner.id} lots": "A tier's price in Stars is 1 to 10000",
        "/tier_archive nosuchtier00": "There is no tier nosuchtier00.",
    }
    for text, words in refusals.items():
        answer = await tg.say(HOST, HOST, text)
        assert answer.startswith("⚠️") and words in answer, (text, answer)
    assert await tiers_of(tg, HOST) == [("Inner circle", 450, "EUR", None, False)]

    # Stars, by id or by name; then the list shows price, Stars, subscribers and perks
    assert "at 300 Stars every 30 days" in await tg.say(HOST, HOST, f"/tier_stars {inner.id} 300")
    await tg.say(HOST, HOST, "/tier_create Supporter 2 EUR")
    await tg.say(HOST, HOST, "/tier_create Patron 10 eur")
    listing = await tg.say(HOST, HOST, "/tiers")
    assert (f"<b>Inner circle</b> (<code>{inner.id}</code>): 4.50 EUR/month or 300 Stars on Telegram · 0 subscribers"
            in listing and "Members-only Spaces &amp; Q&amp;A" in listing)
    assert listing.index("Supporter") < listing.index("Inner circle") < listing.index("Patron")  # cheapest first

    # a fourth tier is refused; someone else cannot archive or price the creator's tier
    assert "at most 3 tiers at once: archive one first" in await tg.say(HOST, HOST, "/tier_create More 20 eur")
    await tg.say(FAN1, FAN1, "/start")
    assert "Only the tier's creator can change it." in await tg.say(FAN1, FAN1, f"/tier_archive {inner.id}")
    assert "Only the tier's creator can change it." in await tg.say(FAN1, FAN1, f"/tier_stars {inner.id} 1")
    # in a group the bot keeps a creator's tiers private
    assert "Open a private chat with me first" in await tg.say(GROUP, HOST, "/tiers")
    assert len(await tiers_of(tg, HOST)) == 3 and await tiers_of(tg, FAN1) == []

    # the tier made here sells at once: /subscribe sends its Stars invoice
    mark = len(tg.fake.calls)
    await tg.fake.send_text(FAN1, FAN1, f"/subscribe {inner.id}")
    invoice = await tg.fake.wait_for(lambda c: c.method == "createInvoiceLink", after=mark)
    assert invoice.params["prices"] == [{"label": "Inner circle", "amount": 300}]

    # archive by name: off sale, listed as archived, and a fourth tier fits again
    assert "<b>Patron</b> is off sale" in await tg.say(HOST, HOST, "/tier_archive patron")
    assert "That tier is no longer on sale." in await tg.say(HOST, HOST, "/tier_stars Patron 5")
    assert "Patron" in (listing := await tg.say(HOST, HOST, "/tiers")) and "· archived" in listing
    gold = await tg.say(HOST, HOST, "/tier_create Gold 15 eur Fans' chat")
    assert "<b>Gold</b> is on sale at 15.00 EUR/month" in gold
    assert [(t[0], t[4]) for t in await tiers_of(tg, HOST)] == [
        ("Supporter", False), ("Inner circle", False), ("Patron", True), ("Gold", False)]


async def test_the_menu_and_help_offer_the_tier_commands(tg: TG) -> None:
    menu = {c["command"] for c in tg.fake.sent("setMyCommands")[0].params["commands"]}
    assert {"tiers", "tier_create", "tier_archive", "tier_stars"} <= menu
    help_text = await tg.say(FAN1, FAN1, "/help")
    assert "/tier_create — NAME PRICE CURRENCY [PERKS]" in help_text
