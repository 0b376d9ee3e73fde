"""A small key-value store per plugin, in the one database (so it survives restarts and is shared by
every process): JSON values under string keys, listed by prefix in key order.

Keys are the plugin's own design; put fixed-width numbers in them (``audit:SPACE:00001732...``)
so key order is time order on every backend. The port is ``core.ports.KeyValues``; the SQL
implementation lives in ``core/storage/kv.py`` and is re-exported here under its old names.
"""

from __future__ import annotations

from core.ports import KeyValueEntry as Entry
from core.ports import KeyValues
from core.storage.kv import MAX_KEY, MAX_VALUE_BYTES, KeyValueStore

__all__ = ["MAX_KEY", "MAX_VALUE_BYTES", "Entry", "KeyValueStore", "KeyValues"]
