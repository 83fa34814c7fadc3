-- Sites, events, rejected hits and the processor's state.
-- Times are UTC milliseconds since the epoch unless the column name says otherwise.

CREATE TABLE sites (
    id TEXT PRIMARY KEY,
    domain TEXT NOT NULL UNIQUE,
    allowed_domains TEXT NOT NULL,      -- JSON list; each entry also allows its subdomains
    timezone TEXT NOT NULL,             -- IANA name used for report days
    api_key_hash TEXT NOT NULL,         -- SHA-256 hex of the server API key
    cookies INTEGER NOT NULL DEFAULT 1, -- 1: a first-party visitor cookie may be used
    created_ts INTEGER NOT NULL
);

CREATE TABLE daily_salts (
    day TEXT PRIMARY KEY,               -- UTC date; rows older than two days are deleted
    salt BLOB NOT NULL
);

CREATE TABLE spool_cursors (
    spool TEXT PRIMARY KEY,             -- spool file name
    last_rowid INTEGER NOT NULL         -- highest spool row already turned into events
);

CREATE TABLE visitor_sessions (
    site_id TEXT NOT NULL,
    visitor_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    last_ts INTEGER NOT NULL,
    PRIMARY KEY (site_id, visitor_id)
) WITHOUT ROWID;

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    event_uid TEXT NOT NULL UNIQUE,     -- derived from the spool row, so a replay is a no-op
    site_id TEXT NOT NULL,
    ts INTEGER NOT NULL,                -- time the collector received the hit
    local_day TEXT NOT NULL,            -- YYYY-MM-DD in the site's time zone
    local_hour INTEGER NOT NULL,        -- 0-23 in the site's time zone
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    client_event_id TEXT,
    url TEXT,
    host TEXT,
    path TEXT,
    title TEXT,
    referrer TEXT,
    referrer_host TEXT,
    channel TEXT NOT NULL,
    utm_source TEXT,
    utm_medium TEXT,
    utm_campaign TEXT,
    utm_term TEXT,
    utm_content TEXT,
    click_id_type TEXT,
    click_id TEXT,
    campaign TEXT,
    creative TEXT,
    placement TEXT,
    recipient TEXT,
    value REAL,
    currency TEXT,
    props TEXT,                         -- JSON object of custom properties
    visitor_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    session_start INTEGER NOT NULL,     -- 1 on the first event of a session
    browser TEXT,
    browser_version TEXT,
    os TEXT,
    os_version TEXT,
    device_type TEXT,
    is_bot INTEGER NOT NULL,
    bot_reason TEXT,
    machine_open INTEGER NOT NULL DEFAULT 0,
    ip_anon TEXT
);

CREATE UNIQUE INDEX events_client_event_id
    ON events (site_id, name, client_event_id) WHERE client_event_id IS NOT NULL;
CREATE INDEX events_site_day_name ON events (site_id, local_day, name);
CREATE INDEX events_site_visitor ON events (site_id, visitor_id, ts);

CREATE TABLE rejected_hits (
    id INTEGER PRIMARY KEY,
    hit_uid TEXT NOT NULL UNIQUE,
    received_ts INTEGER NOT NULL,
    source TEXT NOT NULL,
    site_id TEXT,
    reason TEXT NOT NULL,
    detail TEXT,
    raw BLOB,                           -- query string or body as received, truncated to 64 KiB
    user_agent TEXT
);

CREATE INDEX rejected_hits_reason ON rejected_hits (reason, received_ts);
