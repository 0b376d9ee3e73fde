"""The webrtc adapter (see DESIGN.md): carries core Spaces to webrtc; depends on core only."""
