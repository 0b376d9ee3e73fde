"""What ``spacebridge serve`` tells the person who started it (where to open, on a fresh instance
the first-run link that makes the admin account, and what to do next), and the command server it
starts beside itself (cli_server.py, docs/cli.md). Standard library only at import: a benchmark
starts a command server with ``spawn`` and stays as small as the shell's process it measures."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from spacebridge.cli_client import SOCKET_NAME, enabled

if TYPE_CHECKING:  # imports every adapter: only serve, which builds them, needs it
    from spacebridge.instance import Instance

__all__ = ["Handle", "browser_url", "serve_facts", "spawn", "wait_ready"]
COMMAND_SERVER_TARGET = "spacebridge.cli_app:run"  # what its children run: the ``spacebridge`` command


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


# ---- the command server ---------------------------------------------------------------------------
@dataclass
class Handle:
    """``serve``'s end of its command server: the process, the pipe that keeps it alive (it stops when
    this end closes, also when ``serve`` is killed) and the pipe it says "ready" on."""

    process: subprocess.Popen[bytes]
    keepalive: int
    ready: int
    path: Path

    def stop(self, wait_s: float = 5.0) -> None:
        """Stop taking commands (the socket goes at once); running ones finish within ``wait_s``."""
        for fd in (self.keepalive, self.ready):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):  # also ends one still importing (it has no socket yet)
            self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(wait_s)


async def wait_ready(handle: Handle, timeout_s: float = 30.0) -> bool:
    """True once the server listens (False: it could not, or is still importing after ``timeout_s``:
    commands run directly meanwhile)."""
    import asyncio

    loop = asyncio.get_running_loop()
    said: asyncio.Future[bool] = loop.create_future()

    def readable() -> None:
        loop.remove_reader(handle.ready)
        try:
            data = os.read(handle.ready, 16)
        except OSError:
            data = b""
        if not said.done():
            said.set_result(data.startswith(b"ready"))

    loop.add_reader(handle.ready, readable)
    try:
        return await asyncio.wait_for(said, timeout_s)
    except TimeoutError:
        loop.remove_reader(handle.ready)
        return False


def spawn(data_dir: Path, target: str = COMMAND_SERVER_TARGET) -> Handle | None:
    """Start a command server for ``data_dir`` (``serve`` does, unless turned off); it imports the CLI
    in the background and writes "ready" on ``Handle.ready`` once it listens. It gets no setting:
    the chat and payment tokens are left out of its environment (each child takes its caller's)."""
    if not enabled():
        return None
    keep_r, keep_w = os.pipe()
    ready_r, ready_w = os.pipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACEBRIDGE_", "DISCORD_", "TELEGRAM_",
                                                                      "STRIPE_"))}
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "spacebridge.cli_server", "--socket", str(data_dir / SOCKET_NAME),
             "--parent-fd", str(keep_r), "--ready-fd", str(ready_w), "--target", target],
            pass_fds=(keep_r, ready_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            env=env, start_new_session=True)
    except OSError:
        for fd in (keep_r, keep_w, ready_r, ready_w):
            os.close(fd)
        return None
    os.close(keep_r)
    os.close(ready_w)
    return Handle(process, keep_w, ready_r, data_dir / SOCKET_NAME)
