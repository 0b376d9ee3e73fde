"""A second loopback address for ICE: aioice never offers 127.0.0.1, and tests stay on loopback."""

from __future__ import annotations

import os
import subprocess

import pytest

LOOPBACK = "127.0.0.2"


def ensure_loopback_alias() -> None:
    have = subprocess.run(["ip", "-4", "addr", "show", "lo"], capture_output=True, text=True).stdout
    if LOOPBACK in have:
        return
    p = subprocess.run(["ip", "addr", "add", f"{LOOPBACK}/8", "dev", "lo"], capture_output=True, text=True)
    if p.returncode != 0:
        msg = f"cannot add {LOOPBACK} to lo for loopback ICE ({p.stderr.strip()}); run as root"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
