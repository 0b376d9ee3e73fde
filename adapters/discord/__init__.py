"""The discord adapter (see DESIGN.md): carries core Spaces to discord; depends on core only."""
