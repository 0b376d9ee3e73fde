"""The Telegram adapter (see DESIGN.md): carries core Spaces to Telegram; depends on core and billing."""

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"  # the Mini App launcher page
