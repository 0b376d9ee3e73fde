"""Start times as people type them in chat or a shell: ISO 8601 with a zone, or relative (+90m, in 2h)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from core.errors import Invalid

_REL = re.compile(r"^(?:\+|in\s+)?\s*(\d{1,5})\s*(m|min|mins|minutes?|h|hours?|d|days?)$", re.IGNORECASE)


def parse_when(text: str, now: datetime) -> datetime:
    s = text.strip()
    m = _REL.match(s)
    if m:
        n, unit = int(m.group(1)), m.group(2)[0].lower()
        return now + {"m": timedelta(minutes=n), "h": timedelta(hours=n), "d": timedelta(days=n)}[unit]
    try:
        when = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise Invalid("time.unreadable", given=s[:64],
                      hint="use e.g. 2026-12-01T18:00+00:00, +90m, in 2h or 3d") from None
    if when.tzinfo is None:
        raise Invalid("space.naive_time", hint="add a zone, e.g. 2026-12-01T18:00+00:00 or ...Z")
    return when
