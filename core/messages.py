"""Plain-English wording for domain error codes, shared by every adapter and the CLI.

Errors carry only codes and data (``core.errors``); this is the one place that turns them into
sentences, so Discord, Telegram, the web room and the CLI say the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import DomainError

_RULES = {
    "followers": "needs {needed} followers, has {has}",
    "platform_role": "needs one of the roles {needed}",
    "paid_tier": "needs a paid account",
    "attended": "needs to have attended {needed} Spaces, has {has}",
    "allow_list": "is not on this community's host list",
    "admins_only": "only community admins may host here",
}

_TEXT: dict[str, str] = {
    "space.not_found": "There is no Space {space_id}.",
    "space.title_length": "A title must be 1 to {max} characters (this one has {length}).",
    "space.too_many_topics": "A Space can have at most {max} topics.",
    "space.topic_length": "Topics are at most {max} characters.",
    "space.search_too_long": "Search for at most {max} characters (this search has {length}).",
    "time.unreadable": "I can't read the time {given!r}: {hint}.",
    "space.naive_time": "Give the start time with a time zone ({hint}).",
    "space.start_in_past": "The start time {start} is in the past.",
    "space.start_too_far": "Spaces can be scheduled at most {max_days} days ahead.",
    "space.too_many_scheduled": "You already have {max} scheduled Spaces; cancel or start one first.",
    "space.bad_visibility": "Visibility must be one of {allowed}.",
    "space.bad_state": "State must be one of {allowed}.",
    "space.closed": "This Space is {state}.",
    "space.ended": "This Space has {state}.",
    "space.not_live": "This Space is not live (it is {state}).",
    "space.cannot_start": "Only a scheduled Space can start (this one is {state}).",
    "space.cannot_cancel": "Only a scheduled Space can be cancelled (this one is {state}).",
    "space.cannot_reschedule": "Only a scheduled Space can be rescheduled (this one is {state}).",
    "space.blocked": "The host has blocked you from their Spaces.",
    "space.busy": "Too many changes at once; try again.",
    "role.host_required": "Only the host can do that (you are {role}).",
    "role.moderator_required": "Only the host or a co-host can do that (you are {role}).",
    "role.stage_required": "Only people on stage can do that (you are {role}).",
    "role.bad_target": "Role must be one of {allowed}.",
    "role.is_host": "That is the host.",
    "role.unchanged": "They already are {role}.",
    "role.cannot_mute_host": "The host cannot be muted by others.",
    "role.cannot_remove_host": "The host cannot be removed.",
    "stage.full": "The stage is full ({max} speakers).",
    "stage.cohosts_full": "A Space has at most {max} co-hosts.",
    "stage.already_on_stage": "They are already on stage.",
    "stage.not_on_stage": "They are not on stage.",
    "stage.not_invited": "You have not been invited to speak.",
    "hand.on_stage": "You are on stage already; no need to raise your hand.",
    "hand.already_raised": "Your hand is already raised (position {position}).",
    "hand.not_raised": "There is no raised hand to act on.",
    "queue.no_tiers": "The host sells no subscription tiers yet, so there are no subscribers to put first in the "
                      "queue.",
    "reaction.not_an_emoji": "A reaction must be a single emoji.",
    "comment.length": "A comment is 1 to {max} characters (this one has {length}).",
    "reaction.rate_limited": "Slow down: try again in {retry_after_s} s.",
    "reaction.needs_bus": "A reaction from the shell reaches the room only over the instance's Redis bus "
                          "({detail}); reactions are counted in the serving processes' memory, never stored.",
    "plugin.unknown_command": "There is no command {name}.",
    "plugin.no_report": "No installed plugin {plugin} keeps a {report} report.",
    "plugin.disabled": "The {plugin} plugin is turned off in this community.",
    "plugin.failed": "The {plugin} plugin ran into a problem; nothing was changed. Please try again later.",
    "plugin.missing_option": "{command} needs {option}.",
    "plugin.bad_option": "{option}: {problem}.",
    "plugin.command_taken": "The command name {name} is already taken.",
    "plugin.bad_command_name": "Command names are 2-32 characters of a-z, 0-9 and _ ({name!r} is not).",
    "store.bad_key": "Store keys are 1 to {max} characters.",
    "store.value_too_big": "Stored values are at most {max} bytes.",
    "moderation.rate_limited": "Slow down: you can {action} again in {retry_after_s} s.",
    "moderation.filtered": "That contains words this community does not allow.",
    "recording.already": "This Space is already being recorded.",
    "recording.not_recording": "This Space is not being recorded.",
    "recording.not_live": "Only a live Space can be recorded.",
    "recording.elsewhere": "This Space's recording runs in another server process, and only it can cut clips; "
                           "try again (the next request may reach it).",
    "recording.no_clip": "Clips can only be made while the Space is being recorded.",
    "recording.not_found": "There is no recording {recording_id}.",
    "captions.backend_unavailable": "Captions are not available here: {detail}.",
    "pin.title_length": "A pin title must be 1 to {max} characters.",
    "pin.target": "Pin a link or a message: {hint}.",
    "pin.bad_url": "That is not a web link (http:// or https://).",
    "pin.full": "At most {max} items can be pinned; unpin one first.",
    "pin.not_found": "There is no pin {pin_id}.",
    "reminder.not_scheduled": "Reminders are for scheduled Spaces (this one is {state}).",
    "ticket.required": "This Space needs a ticket.",
    "ticket.not_allowed_here": "Ticketed Spaces are not enabled in this community.",
    "ticket.only_before_start": "Ticketing can only be changed before the Space starts.",
    "ticket.bad_price": "The price must be above zero.",
    "ticket.bad_capacity": "Capacity must be at least 1.",
    "ticket.bad_currency": "Currency must be a 3-letter code.",
    "token.malformed": "That join link is damaged; ask for a new one.",
    "token.bad_signature": "That join link is not genuine; ask for a new one.",
    "token.expired": "That join link has expired; ask for a new one.",
    "token.wrong_space": "That join link is for a different Space.",
    "token.bad_role": "A join link's role must be one of {allowed}.",
    "token.guest_mismatch": "Guest links carry no account; account links are not guest links.",
    "token.weak_secret": "The signing secret must be at least {min_bytes} bytes.",
    "ticket.not_ticketed": "This Space is free: no ticket needed.",
    "ticket.sales_closed": "Ticket sales for this Space are closed.",
    "ticket.on_stage": "You are on stage: no ticket needed.",
    "ticket.already_paid": "You already have a ticket for this Space.",
    "ticket.sold_out": "Sold out: all {capacity} seats are taken.",
    "ticket.bad_provider": "Payment provider must be one of {allowed}.",
    "ticket.not_found": "There is no ticket {ticket_id}.",
    "ticket.amount_mismatch": "The payment ({got}) does not match the ticket price ({expected}).",
    "billing.bad_fee": "The platform fee must be between 0 and 10000 basis points.",
    "billing.off": "Ticket sales are off on this instance ({hint}).",
    "billing.bad_key": "The payment provider refused our API key; tell the instance operator.",
    "billing.unavailable": "The payment provider is not reachable right now; try again shortly.",
    "billing.provider_refused": "The payment provider refused: {detail}",
    "billing.idempotency_conflict": "That payment is already being processed.",
    "payment.card_declined": "The card was declined: {detail}",
    "billing.payouts_not_ready": "Tickets are not on sale yet: the host has not finished setting up payouts "
                                 "with Stripe (the studio's Payouts page, or `spacebridge billing connect`).",
    "billing.bad_hold": "A checkout link must stay open {allowed}; this seat is held for {minutes} minutes.",
    "billing.nothing_to_refund": "There is no payment to refund for {ref}.",
    "webhook.failed": "The payment event {event_id} could not be applied; it will be delivered again.",
    "ticket.none_paid": "You have no paid ticket for this Space.",
    "ticket.not_refundable": "Refunds are offered when the host moves or cancels the Space.",
    "protocol.bad_argument": "The command's argument {argument} {problem}.",
    "protocol.unknown_command": "Unknown command {name}.",
    "command.not_now": "{command} is for {allowed} Spaces (this one is {state}).",
    "command.unavailable": "{command} is not offered on this instance.",
    "command.bad_entry": "The command {command} is declared wrongly: {option} {problem}.",
    # the one wording for a queue number nobody holds (core.commands.resolve_person), on every surface
    "person.not_in_queue": "There is no raised hand number {position} ({queued} in the queue); the queue "
                           "lists who is waiting.",
    "guest.link_account": "Guests can listen; sign in (link your account) to react or raise a hand.",
    "space.guests_not_allowed": "This Space is unlisted: join with a personal link.",
    "sdp.invalid": "The media offer is not valid SDP ({detail}).",
    "media.no_hls": "This instance does not offer HLS listening ({detail}).",
    "media.unavailable": "The Space's audio is not available right now ({detail}); trying again shortly may work.",
    "sdp.no_audio": "The media offer has no audio ({detail}).",
    "account.not_found": "There is no account {account_id}.",
    "account.name_length": "A name must be 1 to {max} characters.",
    "account.operator_required": "Only the instance operator can do that.",
    "identity.bad_id": "That {platform} user id is not valid.",
    "identity.not_yours": "That {platform} identity is not linked to you.",
    "platform.unknown": "Unknown platform {platform}; known: {known}.",
    "link.bad_code": "That is not a link code.",
    "link.code_invalid": "That code is not valid: {hint}.",
    "link.same_platform": "Redeem the code on a different platform than the one that issued it.",
    "link.already_linked": "These accounts are already linked.",
    "link.two_payout_accounts": "Both accounts are paid out to different Stripe accounts, so they cannot be "
                                "merged: keep one payout account first.",
    "follow.self": "You cannot follow yourself.",
    "community.not_found": "There is no community {community_id}.",
    "community.admin_required": "Only community admins can change its settings.",
    "community.bad_settings": "Those settings are not valid: {detail}",
    "ticket.hold_expired": "Your seat was held for a limited time and that time is up; ask for a new ticket.",
    "ticket.bad_ref": "That payment reference is not one of ours.",
    "ticket.bad_discount": "A subscriber discount is {min} to {max} percent off (not {percent}).",
    "ticket.discount_needs_tier": "A subscriber discount needs both the percent off and the tier it is for.",
    "ticket.discount_not_ticketed": "This Space has no ticket price to discount: set a price first.",
    "telegram.bad_mode": "The Telegram mode must be polling or webhook, not {mode}.",
    "telegram.init_data_missing": "Open this page from the bot's Join button in Telegram.",
    "telegram.init_data_malformed": "Telegram's sign-in data is damaged; open the Space again from the bot.",
    "telegram.init_data_forged": "Telegram's sign-in data is not genuine; open the Space again from the bot.",
    "telegram.init_data_expired": "This sign-in is too old; open the Space again from the bot.",
    "service.unavailable": "Spacebridge cannot reach its {what} right now; try again in {retry_after_s} s.",
    # Super Follows (docs/subscriptions.md)
    "billing.subscriptions_off": "Subscriptions are off on this instance ({hint}).",
    "subscription.required": "This Space is for the host's subscribers: subscribe to join.",
    "subscription.sign_in": "This Space is for the host's subscribers: sign in and subscribe to join.",
    "subscription.early_access": "Subscribers are in first; everyone else may join from {opens_at}.",
    "subscription.only_before_start": "Who may join can only be changed before the Space starts.",
    "subscription.bad_early_minutes": "Early access is 0 to {max} minutes (not {minutes}).",
    "subscription.already": "You already subscribe to this creator: change your tier instead.",
    "subscription.own_tier": "You cannot subscribe to your own tier.",
    "subscription.not_found": "There is no subscription {subscription_id} of yours.",
    "subscription.over": "That subscription has ended.",
    "subscription.same_tier": "You are already on that tier.",
    "subscription.other_provider": "That subscription is paid through {provider}; change it there.",
    "subscription.nothing_to_refund": "That subscription has no paid period to refund.",
    "subscription.already_refunded": "That subscription's latest period was already refunded.",
    "subscription.stars_change": ("A Telegram Stars subscription cannot change tier (Telegram keeps its price): "
                                  "cancel it (/unsubscribe {subscription_id} in the Telegram bot) and subscribe "
                                  "to the other tier once it ends."),
    "tier.not_found": "There is no tier {tier_id}.",
    "tier.too_many": "A creator can sell at most {max} tiers at once: archive one first.",
    "tier.currency_mismatch": "All your tiers are priced in {currency}; this one is in {got}.",
    "tier.name_taken": "You already have a tier called {name}.",
    "tier.name_length": "A tier's name is 1 to {max} characters.",
    "tier.bad_price": "A tier's monthly price must be above zero.",
    "tier.bad_currency": "Currency must be a 3-letter code (not {currency}).",
    "tier.perks_length": "Perks are at most {max} characters.",
    "tier.not_yours": "Only the tier's creator can change it.",
    "tier.not_hosts": "That tier is not one of the host's.",
    "tier.archived": "That tier is no longer on sale.",
    "tier.bad_stars": "A tier's price in Stars is 1 to {max} a month (not {stars}).",
    "tier.no_stars": "That tier is not sold in Telegram Stars; subscribe with the link instead.",
    "subscription.open_space": "That Space is open to everyone: there is nothing to subscribe to for it.",
    "subscription.bad_payload": "That is not one of our subscription invoices.",
}


def add_wording(texts: Mapping[str, str]) -> None:
    """Plugins bring the sentences for their own error codes (existing codes keep theirs)."""
    for code, text in texts.items():
        _TEXT.setdefault(code, text)


def describe(error: DomainError, extra: Mapping[str, str] | None = None) -> str:
    """The sentence for ``error``; ``extra`` holds an adapter's own codes (e.g. "telegram.dm_first")."""
    if error.code == "eligibility.failed":
        parts = [_RULES.get(f["rule"], f["rule"]).format(**_fmt(f)) for f in error.data.get("failures", [])]
        return "You cannot do that here yet: " + "; ".join(parts) + "."
    template = (extra or {}).get(error.code) or _TEXT.get(error.code)
    if template is None:
        return f"Refused ({error.code})."
    try:
        return template.format(**_fmt(error.data))
    except (KeyError, IndexError):
        return template.split("{")[0].rstrip(" (") + "."


def _fmt(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in data.items()}
