"""Which remote ICE candidates the server may send to (``SPACEBRIDGE_ICE_ALLOWED_NETWORKS``).

The server runs ICE connectivity checks toward every remote candidate it is given, so a client
could otherwise make it send UDP to any address (another machine on the server's private network,
a link-local metadata service, loopback services). Candidates outside the allowed networks are
dropped before aioice ever sees them: from the offer's SDP and when trickled. Dropping costs a
reachable client nothing: its own checks toward the server's candidates still arrive, and ICE
learns its address from them (a peer-reflexive candidate).

Stdlib only, so the configuration can validate the setting without loading the media stack.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

GLOBAL = "global"  # every public (globally routable) address
MDNS = "mdns"  # ``<uuid>.local`` host candidates, resolved by multicast DNS on the server's own link
DEFAULT = (GLOBAL,)
HELP = ("a comma-separated list of CIDR networks (e.g. 203.0.113.0/24, 10.0.0.0/8, 127.0.0.0/8, ::1/128), "
        f"'{GLOBAL}' (every public address, the default) and '{MDNS}' (browsers' .local names)")


@dataclass(frozen=True)
class CandidatePolicy:
    """The networks remote candidates may be on; anything else is never contacted."""

    networks: tuple[IpNetwork, ...] = ()
    allow_global: bool = True
    allow_mdns: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str]) -> CandidatePolicy:
        """Build the policy from setting values; ValueError names the bad entry and the fix."""
        networks: list[IpNetwork] = []
        allow_global = allow_mdns = False
        seen = False
        for raw in entries:
            if not isinstance(raw, str):
                raise ValueError(f"{raw!r} is not a network; the setting is {HELP}")
            entry = raw.strip()
            if not entry:
                continue
            seen = True
            if entry.lower() == GLOBAL:
                allow_global = True
            elif entry.lower() in (MDNS, ".local"):
                allow_mdns = True
            else:
                networks.append(_network(entry))
        if not seen:
            return cls()
        return cls(tuple(networks), allow_global, allow_mdns)

    def allows(self, host: str) -> bool:
        """Whether the server may send to a candidate on ``host`` (an address or an mDNS name)."""
        if host.lower().endswith(".local"):
            return self.allow_mdns
        try:
            addr: IpAddress = ipaddress.ip_address(host)
        except ValueError:
            return False  # a DNS name (or a scoped IPv6 address): resolving it would be a probe too
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if addr.is_multicast or addr.is_unspecified:
            return False  # never a peer
        if self.allow_global and addr.is_global:
            return True
        return any(addr in net for net in self.networks)

    def describe(self) -> str:
        parts = [GLOBAL] if self.allow_global else []
        parts += [str(n) for n in self.networks]
        if self.allow_mdns:
            parts.append(MDNS)
        return ", ".join(parts) or "nothing"


def _network(entry: str) -> IpNetwork:
    try:
        return ipaddress.ip_network(entry, strict=True)
    except ValueError as e:
        try:
            loose = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not a network ({e}); the setting is {HELP}") from None
        raise ValueError(f"{entry!r} has host bits set; did you mean {loose}?") from None


def candidate_host(value: str) -> str | None:
    """The address of an ``a=candidate`` value, split exactly as aiortc splits it (None: malformed)."""
    bits = value.removeprefix("candidate:").split()
    return bits[4] if len(bits) >= 8 else None


def filter_sdp(sdp: str, policy: CandidatePolicy) -> tuple[str, list[str]]:
    """The SDP without the candidate lines the policy refuses (and without malformed ones), and the
    refused addresses. Lines are split as aiortc splits them, so no line can hide from the filter.

    When a candidate is refused, ``a=end-of-candidates`` goes too: with every candidate gone the ICE
    agent would give up at once, while the client's own checks, arriving a moment later, connect it."""
    kept: list[str] = []
    dropped: list[str] = []
    for line in sdp.splitlines():
        if line.startswith("a=") and ":" in line and line[2:].split(":", 1)[0] == "candidate":
            host = candidate_host(line[2:].split(":", 1)[1])
            if host is None or not policy.allows(host):
                dropped.append(host or "?")
                continue
        kept.append(line)
    if dropped:
        kept = [ln for ln in kept if ln.rstrip() != "a=end-of-candidates"]
    return "\r\n".join(kept) + "\r\n", dropped
