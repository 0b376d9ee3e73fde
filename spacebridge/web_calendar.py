"""A scheduled Space as an iCalendar file (RFC 5545): what "Add to calendar" on its page downloads.

Times are written in UTC (``...Z``) so no calendar has to guess a zone; text is escaped and lines are
folded at 75 octets as the RFC asks; the UID is stable per Space, so downloading the file again after
a reschedule updates the same calendar entry (SEQUENCE grows with the Space's version).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from core.model.space import Space

__all__ = ["DEFAULT_LENGTH", "escape_text", "fold", "space_ics"]

DEFAULT_LENGTH = timedelta(hours=1)  # a Space has no planned end; calendars need one


def escape_text(value: str) -> str:
    """RFC 5545 3.3.11 TEXT: backslash, semicolon, comma and newlines escaped."""
    return (value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n"))


def fold(line: str) -> str:
    """RFC 5545 3.1: lines longer than 75 octets continue on the next line after CRLF and a space,
    never splitting a UTF-8 character."""
    out: list[str] = []
    current, size, limit = "", 0, 75
    for ch in line:
        n = len(ch.encode())
        if size + n > limit:
            out.append(current)
            current, size, limit = "", 0, 74  # the leading space of a continuation counts
        current += ch
        size += n
    out.append(current)
    return "\r\n ".join(out)


def _utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def space_ics(space: Space, host_name: str, url: str, now: datetime) -> str:
    """The VCALENDAR for a scheduled Space (``space.scheduled_for`` must be set)."""
    assert space.scheduled_for is not None
    start = space.scheduled_for
    domain = urlsplit(url).hostname or "spacebridge"
    description = f"A live audio Space hosted by {host_name}."
    if space.topics:
        description += f" Topics: {', '.join(space.topics)}."
    description += f"\nListen at {url}"
    lines = [
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Spacebridge//Spaces//EN", "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH", "BEGIN:VEVENT",
        f"UID:space-{space.id}@{domain}",
        f"SEQUENCE:{space.version}",
        f"DTSTAMP:{_utc(now)}",
        f"DTSTART:{_utc(start)}",
        f"DTEND:{_utc(start + DEFAULT_LENGTH)}",
        f"SUMMARY:{escape_text(space.title)}",
        f"DESCRIPTION:{escape_text(description)}",
        f"URL:{url}",
        f"LOCATION:{escape_text(url)}",
        "STATUS:CONFIRMED",
        "END:VEVENT", "END:VCALENDAR",
    ]
    return "".join(fold(line) + "\r\n" for line in lines)
