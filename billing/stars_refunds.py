"""The ``subscription.refund.telegram`` job: a creator's refund of a Stars subscription's period,
carried out by the bot's process.

``spacebridge billing subscription refund`` runs without the bot (the CLI starts no adapter), so it
ends the subscription, marks the period refunded and queues this job in one transaction
(billing/stars_subscriptions.py). The kind names its platform, as ``notify.deliver.telegram`` does,
so only a process running the Telegram bot claims it. Both calls are safe to repeat after a crash:
a renewal already stopped (``SUBSCRIPTION_NOT_MODIFIED``) and a charge already refunded count as done.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from core.ports import NewJob
from core.scheduler import Handler, Job

REFUND_JOB = "subscription.refund.telegram"


class StarsBot(Protocol):
    async def cancel_star_subscription(self, user_id: int, first_charge_id: str) -> None: ...
    async def refund(self, provider_ref: str, amount_minor: int, idempotency_key: str, reason: str) -> str: ...


def refund_job(subscription_id: str, user_id: int, charge_id: str, first_charge_id: str, now: datetime) -> NewJob:
    """Once per refunded charge (its dedupe key)."""
    return NewJob(REFUND_JOB, {"subscription_id": subscription_id, "user_id": user_id, "charge_id": charge_id,
                               "first_charge_id": first_charge_id}, now, f"subrefund:{charge_id}")


def make_stars_refund_handler(bot: StarsBot) -> Handler:
    """Stop the renewal first (so Telegram bills no further period), then give the Stars back."""

    async def refund(job: Job) -> None:
        p = job.payload
        await bot.cancel_star_subscription(int(p["user_id"]), str(p["first_charge_id"]))
        await bot.refund(f"{p['user_id']}:{p['charge_id']}", 0, f"subrefund:{p['charge_id']}", "creator_refund")

    return refund
