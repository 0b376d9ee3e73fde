"""The plugin API and first-party plugins (found through the ``spacebridge.plugins`` entry-point group)."""
