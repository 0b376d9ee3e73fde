"""Put on PYTHONPATH by the test suite: every Python process it starts runs the network guard."""

import importlib.util
import os
import sys
from pathlib import Path

if os.environ.get("NETGUARD_LOG"):
    _spec = importlib.util.spec_from_file_location("_netguard", Path(__file__).resolve().parent.parent / "guard.py")
    if _spec is not None and _spec.loader is not None:
        _guard = importlib.util.module_from_spec(_spec)
        sys.modules["_netguard"] = _guard
        _spec.loader.exec_module(_guard)
        _guard.install()
