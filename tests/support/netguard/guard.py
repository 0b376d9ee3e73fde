"""An audit hook that refuses and records every socket use leaving loopback.

Installed in the pytest process (``tests/support/netguard/plugin.py``) and, through
``site/sitecustomize.py`` on ``PYTHONPATH``, in every Python process the suite starts. It sees
``socket.connect``, ``socket.sendto``/``sendmsg`` and name lookups (``socket.getaddrinfo``,
``gethostbyname``, ``gethostbyaddr``): a destination outside 127.0.0.0/8, ::1 and this machine's own
interface addresses (packets to those never leave it: an aiortc peer checks from every interface, so
its loopback partner answers it there), or a lookup of a name that is not this machine's, raises
PermissionError at the call (nothing leaves the machine) and is appended, as one JSON line with the
destination and a stack summary, to the file named by ``NETGUARD_LOG``. Unix sockets are fine.

Stdlib only, and loaded by file path in subprocesses (the project is not importable yet there).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

LOG_ENV = "NETGUARD_LOG"  # not SPACEBRIDGE_*: tests strip those from their subprocesses' environment
_INET = (socket.AF_INET, socket.AF_INET6)
_ADDRESS_EVENTS = ("socket.connect", "socket.sendto", "socket.sendmsg")
_NAME_EVENTS = ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr")

violations: list[dict[str, Any]] = []  # this process's, in order
_observers: list[Callable[[str, str], None]] = []  # (event, destination host) of every inet use
_state = threading.local()
_local_names: set[str] = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_verdicts: dict[str, bool] = {}
_installed = False


def _own_addresses() -> set[str]:
    try:
        import ifaddr  # aioice's dependency: the interfaces' addresses without a lookup
    except ImportError:
        return set()
    found: set[str] = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            found.add(str(ip.ip[0] if isinstance(ip.ip, tuple) else ip.ip).lower())
    return found


def is_loopback_address(host: str) -> bool:
    """127.0.0.0/8, ::1 (and IPv4-mapped loopback); the unspecified address means this machine too."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback or addr.is_unspecified


def is_local(host: str) -> bool:
    """An address on loopback or a name that resolves on this machine alone."""
    verdict = _verdicts.get(host)
    if verdict is None:
        name = host.lower().rstrip(".")
        verdict = _verdicts[host] = (
            name in ("", "*") or is_loopback_address(name) or name in _local_names or name.endswith(".localhost"))
    return verdict


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _stack() -> list[str]:
    frames = [f for f in traceback.extract_stack()[:-3] if not f.filename.endswith("netguard/guard.py")]
    return [f"{f.filename}:{f.lineno} {f.name}" for f in frames[-12:]]


def _refuse(event: str, destination: str) -> None:
    record = {"event": event, "destination": destination, "pid": os.getpid(), "argv": sys.argv[:4],
              "test": os.environ.get("PYTEST_CURRENT_TEST", ""), "stack": _stack()}
    violations.append(record)
    path = os.environ.get(LOG_ENV)
    if path:
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError:
            pass
    raise PermissionError(f"netguard: {event} to {destination} leaves loopback (tests stay on 127.0.0.0/8)")


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not event.startswith("socket.") or getattr(_state, "busy", False):
        return
    _state.busy = True
    try:
        if event in _ADDRESS_EVENTS:
            sock, address = args[0], args[1]
            if getattr(sock, "family", None) not in _INET or not isinstance(address, tuple) or not address:
                return  # unix, netlink, a connected socket's sendmsg
            host = address[0].decode() if isinstance(address[0], bytes) else str(address[0])
            for observe in _observers:
                observe(event, host)
            if not is_local(host):
                _refuse(event, f"{host}:{address[1]}" if len(address) > 1 else host)
        elif event in _NAME_EVENTS:
            raw = args[0] if args else None
            host = raw.decode() if isinstance(raw, bytes) else ("" if raw is None else str(raw))
            if event == "socket.gethostbyaddr" or not _is_literal(host):  # a literal needs no lookup
                if not is_local(host):
                    _refuse(event, host)
    finally:
        _state.busy = False


def install() -> None:
    """Add the hook (once per process; audit hooks cannot be removed)."""
    global _installed
    if _installed:
        return
    _installed = True
    _local_names.add(socket.gethostname().lower())
    _local_names.update(_own_addresses())
    sys.addaudithook(_hook)


def watch(observer: Callable[[str, str], None]) -> Callable[[], None]:
    """Call ``observer(event, host)`` for every inet connect/send in this process; returns the undo."""
    _observers.append(observer)
    return lambda: _observers.remove(observer)


def read_log(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
