"""What ``spacebridge serve`` tells the person who started it: where to open, on a fresh instance
the first-run link that makes the admin account, and what to do next."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from spacebridge.cli_support import remember_serve_url

if TYPE_CHECKING:  # imports every adapter: only serve, which builds them, needs it
    from spacebridge.instance import Instance

__all__ = ["browser_url", "remember_serve_url", "serve_facts"]


def browser_url(url: str) -> str:
    """``url`` as a browser should open it for passkeys: WebAuthn refuses IP addresses as a relying
    party, so a loopback address becomes ``localhost`` (a configured public URL is kept as it is)."""
    parts = urlsplit(url)
    if parts.hostname in ("127.0.0.1", "::1"):
        netloc = f"localhost:{parts.port}" if parts.port else "localhost"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


async def serve_facts(platform: Instance) -> dict[str, Any]:
    """Start-up facts (``serve --json`` prints them as they are) and ``next``: the sentence to print."""
    from spacebridge.web_auth import first_run_token

    s = platform.settings
    base = browser_url(platform.url) if not s.public_url.strip() else platform.url
    first_run = None
    if "web" in s.roles and not (await platform.core.web_community()).settings.moderator_identities:
        first_run = f"{base}/signin?first_run={first_run_token(s.resolved_secret())}"
    if first_run:
        step = (f"First run: open {first_run} to create the admin account with a passkey (or run "
                "`spacebridge account create NAME --admin`); then host from "
                f"{base}/studio or `spacebridge space create TITLE --as ACCOUNT`.")
    else:
        step = (f"Open {base} to listen; hosts schedule Spaces at {base}/studio or with "
                "`spacebridge space schedule TITLE --as ACCOUNT --at 'in 2h'`. `spacebridge doctor` checks the setup.")
    return {"url": platform.bound_url, "public_url": platform.url, "open": base,
            "database": platform.engine.dialect.name, "roles": list(s.roles),
            "adapters": ["web", *sorted(platform.notifiers)], "first_run_url": first_run, "next": step}
