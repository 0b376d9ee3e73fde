"""The telegram adapter (see DESIGN.md): carries core Spaces to telegram; depends on core only."""
