"""The webrtc adapter (see DESIGN.md): carries core Spaces to webrtc; depends on core only."""

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"  # the web client, served by the app itself
