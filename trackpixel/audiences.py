"""SQL conditions for forwarding to ad platforms and for audience membership.

Forwarders and audience exports select through these conditions only, so consent is enforced
in one place. Bots never qualify, machine email opens never enter an audience.
"""

from __future__ import annotations

from typing import Any

# ad_user_data granted: the event may be sent to an ad platform with identifiers. The stored
# consent already includes Global Privacy Control and DNT where the site honours them.
FORWARDABLE = "consent_ad_user_data = 'granted' AND is_bot = 0"

# ad_personalization granted: the person may be included in a remarketing audience.
AUDIENCE_ELIGIBLE = ("consent_ad_personalization = 'granted' AND is_bot = 0 "
                     "AND machine_open = 0")


def audience_sql(site_id: str, event_name: str, from_day: str, to_day: str) -> tuple[str, dict[str, Any]]:
    """Visitors who did ``event_name`` in the range and whose latest such event allowed
    personalisation; a later denial takes a person out."""
    text = f"""
SELECT visitor_id, MAX(ts) AS last_ts, COUNT(*) AS events
FROM events AS e
WHERE site_id = :site_id AND name = :name AND local_day >= :from_day AND local_day <= :to_day
  AND {AUDIENCE_ELIGIBLE}
  AND NOT EXISTS (
      SELECT 1 FROM events AS later
      WHERE later.site_id = e.site_id AND later.visitor_id = e.visitor_id
        AND later.ts > e.ts AND later.consent_ad_personalization = 'denied')
GROUP BY visitor_id
ORDER BY last_ts DESC
"""
    return text, {"site_id": site_id, "name": event_name, "from_day": from_day,
                  "to_day": to_day}


def forwardable_sql(site_id: str, event_name: str) -> tuple[str, dict[str, Any]]:
    """Events of one name that a forwarder may send with identifiers."""
    text = f"""
SELECT event_uid, name, client_event_id, ts, value, currency, user_data, click_id_type, click_id
FROM events
WHERE site_id = :site_id AND name = :name AND {FORWARDABLE}
ORDER BY ts
"""
    return text, {"site_id": site_id, "name": event_name}
