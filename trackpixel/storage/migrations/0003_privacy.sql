-- Consent state each event was collected under, privacy signals, hashed contact details,
-- per-site privacy settings and the privacy request log.

ALTER TABLE events ADD COLUMN consent_analytics TEXT;          -- 'granted' or 'denied'
ALTER TABLE events ADD COLUMN consent_ad_storage TEXT;
ALTER TABLE events ADD COLUMN consent_ad_user_data TEXT;
ALTER TABLE events ADD COLUMN consent_ad_personalization TEXT;
ALTER TABLE events ADD COLUMN gpc INTEGER NOT NULL DEFAULT 0;  -- Sec-GPC: 1 was sent
ALTER TABLE events ADD COLUMN dnt INTEGER NOT NULL DEFAULT 0;  -- DNT: 1 was sent
ALTER TABLE events ADD COLUMN cookieless INTEGER NOT NULL DEFAULT 0;  -- visitor id is the daily hash
ALTER TABLE events ADD COLUMN user_data TEXT;                  -- JSON of SHA-256 hex digests

ALTER TABLE sites ADD COLUMN privacy TEXT NOT NULL DEFAULT '{}';  -- JSON, see PrivacySettings

CREATE TABLE privacy_requests (
    id INTEGER PRIMARY KEY,
    action TEXT NOT NULL,               -- 'erase'
    site_id TEXT NOT NULL,
    selector_kind TEXT NOT NULL,        -- 'visitor', 'user_id' or 'email'
    selector_hashes TEXT,               -- JSON; cleared once the request is done
    requested_ts INTEGER NOT NULL,
    done_ts INTEGER,
    events_erased INTEGER,
    sessions_erased INTEGER
);

CREATE INDEX events_site_user_data ON events (site_id, user_data) WHERE user_data IS NOT NULL;
