"""The suite stays on loopback: ``guard.py`` (the audit hook, here and in every Python subprocess),
``plugin.py`` (the pytest side) and the flags that keep Chromium, which is no Python, on loopback."""

from __future__ import annotations

# Chromium off every network but loopback. Playwright passes its own --disable-features list; a
# second one replaces it, so the features it disables for quiet start-ups are repeated here.
CHROMIUM_FLAGS = [
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--no-pings",
    "--no-first-run", "--no-default-browser-check", "--disable-default-apps", "--disable-extensions",
    "--metrics-recording-only", "--dns-prefetch-disable",
    # no name resolves but localhost and 127.x: nothing reaches a DNS server
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.*",
    # loopback host candidates (the only ones a test server accepts), real addresses rather than
    # mDNS names (no multicast announcements on the LAN); no STUN server is ever configured
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns,MediaRouter,DialMediaRouteProvider,OptimizationHints,"
    "NetworkTimeServiceQuerying,AimEnabled,PreconnectToSearch,Translate,CertificateTransparencyComponentUpdater,"
    "AutofillServerCommunication,InterestFeedContentSuggestions,HttpsUpgrades,HttpsFirstBalancedModeAutoEnable",
]
