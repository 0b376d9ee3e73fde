"""Short, URL-safe, random identifiers that people can type in a CLI."""

from __future__ import annotations

import secrets

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_id(length: int = 12) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_code(length: int = 8) -> str:
    """A one-time code for linking accounts: upper case, no look-alike letters."""
    return "".join(secrets.choice(_ALPHABET.upper()) for _ in range(length))
