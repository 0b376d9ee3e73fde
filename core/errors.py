"""One error base for every refusal the core makes.

Errors carry a stable ``code`` and data fields, never user-facing text: each adapter turns the code
into words for its platform (``core.messages`` has the shared English wording).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal with a stable code (``"space.not_found"``) and the facts behind it."""

    kind = "invalid"

    def __init__(self, code: str, **data: Any) -> None:
        super().__init__(code)
        self.code = code
        self.data = data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.data!r})"

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "kind": self.kind, **self.data}


class NotFound(DomainError):
    kind = "not_found"


class Forbidden(DomainError):
    """The caller's role or eligibility does not allow the command."""

    kind = "forbidden"


class Invalid(DomainError):
    """The command's arguments are wrong (too-long title, past date, bad emoji...)."""

    kind = "invalid"


class Conflict(DomainError):
    """The command does not fit the current state (Space ended, stage full, already queued...)."""

    kind = "conflict"


class RateLimited(DomainError):
    kind = "rate_limited"


class Unavailable(DomainError):
    """A service the command needs (the database) is not answering; the command may be retried.

    Raised once, where storage meets the driver, so every adapter answers in words instead of
    dropping the connection. ``retry_after_s`` says when trying again is worthwhile.
    """

    kind = "unavailable"
