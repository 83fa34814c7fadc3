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


def audience_sql(site_id: str, event_name: str, from_day: str,
                 to_day: str) -> tuple[str, dict[str, Any]]:
    """Visitors who did ``event_name`` in the range while personalisation was allowed, and
    sent no denial of it afterwards; a later denial, in the range or not, takes them out.

    One grouped pass without correlated subqueries, so it runs on SQLite and ClickHouse."""
    in_range = ("name = :name AND local_day >= :from_day AND local_day <= :to_day AND "
                + AUDIENCE_ELIGIBLE)
    text = f"""
SELECT visitor_id, last_ts, events
FROM (
    SELECT visitor_id,
           MAX(CASE WHEN {in_range} THEN ts END) AS last_ts,
           SUM(CASE WHEN {in_range} THEN 1 ELSE 0 END) AS events,
           MAX(CASE WHEN consent_ad_personalization = 'denied' THEN ts ELSE 0 END)
               AS last_denial_ts
    FROM events
    WHERE site_id = :site_id
    GROUP BY visitor_id
) AS per_visitor
WHERE events > 0 AND last_ts > last_denial_ts
ORDER BY last_ts DESC, visitor_id
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
