"""Aggregates and value objects of the Spaces domain: pure Python, no I/O."""
