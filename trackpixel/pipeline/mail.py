"""Machine email opens: image fetches by mail proxies, prefetchers and security scanners.

These fetches happen without a person reading the message, so they are stored with
``machine_open = 1`` and the detector in ``bot_reason``, and reports count them apart from
human opens.
"""

from __future__ import annotations

import re

# Apple Mail Privacy Protection fetches every image through Apple's proxies with this bare
# user agent, whether or not the message is read.
_APPLE_MPP_UA = "Mozilla/5.0"
# Apple owns 17.0.0.0/8; Mail Privacy Protection relays egress partly from it.
_APPLE_NET_PREFIX = "17."

_PROXY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("gmail_image_proxy", re.compile(r"GoogleImageProxy|ggpht\.com", re.I)),
    ("yahoo_mail_proxy", re.compile(r"YahooMailProxy", re.I)),
    ("security_scanner", re.compile(
        r"Barracuda|Mimecast|Proofpoint|Symantec|Forcepoint|Trend ?Micro|Sophos|"
        r"MessageLabs|Cisco ?IronPort|Fortinet|ZScaler|Microsoft Office Protection|"
        r"SafeLinks|Avanan|Check ?Point|Cloudmark|SpamTitan|Hornetsecurity", re.I)),
)


def machine_open_reason(user_agent: str, ip_anon: str | None, bot_reason: str | None) -> str | None:
    """Return the detector that marks an open as machine-made, or None for a human open."""
    if user_agent.strip() == _APPLE_MPP_UA:
        return "apple_mail_privacy"
    if ip_anon and ip_anon.startswith(_APPLE_NET_PREFIX):
        return "apple_mail_privacy"
    for name, pattern in _PROXY_PATTERNS:
        if pattern.search(user_agent):
            return name
    if bot_reason is not None:
        return bot_reason
    return None
