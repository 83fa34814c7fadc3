-- Day-level counts kept after raw events pass their site's retention limit.
CREATE TABLE daily_rollups (
    site_id TEXT NOT NULL,
    local_day TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    is_bot INTEGER NOT NULL,
    events INTEGER NOT NULL,
    visitors INTEGER NOT NULL,          -- unique per day; summing days over-counts people
    sessions INTEGER NOT NULL,
    total_value REAL NOT NULL,
    PRIMARY KEY (site_id, local_day, name, kind, channel, is_bot)
) WITHOUT ROWID;
