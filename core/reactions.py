"""Emoji reactions: validation, a per-account rate limit and windowed tallies, all in memory.

Reactions are the hottest command in a Space (thousands a second in a big room) and worthless an
hour later, so they are never written to the database: each process tallies what it sees and the
bus carries the individual reactions for animation.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import regex

from core.errors import Invalid, RateLimited

DEFAULT_REACTIONS = ("😂", "😲", "😢", "💜", "💯", "👏", "✊", "👍", "👎", "👋")

# One extended grapheme cluster that is an emoji: a pictographic sequence (with ZWJ, skin tones,
# variation selectors), a flag (regional-indicator pair) or a keycap.
_EMOJI = regex.compile(
    r"^(?:"
    r"\p{Regional_Indicator}{2}"
    r"|[0-9#*]\uFE0F?\u20E3"
    r"|\p{Extended_Pictographic}[\uFE0E\uFE0F]?\p{Emoji_Modifier}?"
    r"(?:\u200D\p{Extended_Pictographic}[\uFE0E\uFE0F]?\p{Emoji_Modifier}?)*"
    r"[\U000E0020-\U000E007F]*"
    r")$"
)
_GRAPHEME = regex.compile(r"\X")


def validate_emoji(text: str) -> str:
    """Exactly one emoji grapheme, or ``Invalid('reaction.not_an_emoji')``."""
    s = text.strip()
    if not s or len(s) > 32 or len(_GRAPHEME.findall(s)) != 1 or not _EMOJI.match(s):
        raise Invalid("reaction.not_an_emoji", given=text[:32])
    return s


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token bucket per key; ``rate`` per second with a ``burst``. Memory is bounded by pruning."""

    def __init__(self, rate: float, burst: int, max_keys: int = 200_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def allow(self, key: tuple[str, str], now: float | None = None) -> float:
        """0 when allowed, else the seconds to wait."""
        t = time.monotonic() if now is None else now
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(t)
            b = self._buckets[key] = _Bucket(float(self.burst), t)
        b.tokens = min(float(self.burst), b.tokens + (t - b.updated) * self.rate)
        b.updated = t
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate

    def _prune(self, t: float) -> None:
        full = self.burst / self.rate
        for k in [k for k, b in self._buckets.items() if t - b.updated > full]:
            del self._buckets[k]
        while len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]


@dataclass
class _Window:
    second: int
    counts: dict[str, int] = field(default_factory=dict)


class ReactionTally:
    """Counts per emoji per second for the last ``horizon_s`` seconds of one Space."""

    def __init__(self, horizon_s: int = 300) -> None:
        self.horizon_s = horizon_s
        self._windows: deque[_Window] = deque()
        self.total: dict[str, int] = {}

    def add(self, emoji: str, now: float) -> None:
        sec = int(now)
        if not self._windows or self._windows[-1].second != sec:
            self._windows.append(_Window(sec))
            while self._windows and self._windows[0].second <= sec - self.horizon_s:
                self._windows.popleft()
        w = self._windows[-1]
        w.counts[emoji] = w.counts.get(emoji, 0) + 1
        self.total[emoji] = self.total.get(emoji, 0) + 1

    def window(self, seconds: int, now: float) -> dict[str, int]:
        """Tallies over the last ``seconds`` seconds, most used first."""
        cutoff = int(now) - seconds
        out: dict[str, int] = {}
        for w in reversed(self._windows):
            if w.second <= cutoff:
                break
            for e, n in w.counts.items():
                out[e] = out.get(e, 0) + n
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


class ReactionBook:
    """All tallies and the rate limit of one process."""

    def __init__(self, rate_per_s: float = 5.0, burst: int = 10) -> None:
        self.limiter = RateLimiter(rate_per_s, burst)
        self._tallies: dict[str, ReactionTally] = {}

    def record(self, space_id: str, account_id: str, emoji: str, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        wait = self.limiter.allow((space_id, account_id), t)
        if wait:
            raise RateLimited("reaction.rate_limited", retry_after_s=round(wait, 2))
        self.count(space_id, emoji, t)

    def count(self, space_id: str, emoji: str, now: float | None = None) -> None:
        """Tally a reaction already accepted (here or by another process)."""
        tally = self._tallies.get(space_id)
        if tally is None:
            tally = self._tallies[space_id] = ReactionTally()
        tally.add(emoji, time.monotonic() if now is None else now)

    def tallies(self, space_id: str, seconds: int = 60, now: float | None = None) -> dict[str, int]:
        tally = self._tallies.get(space_id)
        if tally is None:
            return {}
        return tally.window(seconds, time.monotonic() if now is None else now)

    def totals(self, space_id: str) -> dict[str, int]:
        tally = self._tallies.get(space_id)
        return dict(tally.total) if tally else {}

    def forget(self, space_id: str) -> None:
        self._tallies.pop(space_id, None)
