-- Report rollups that SqliteStore.write_batch maintains in the transaction storing each batch
-- (see trackpixel/storage/rollups.py). Visitor and recipient sets are serialized
-- pyroaring bitmaps of the integers in rollup_ids.

-- Dense integer per visitor id ('v'), session id ('s') or email recipient ('r') of a site.
CREATE TABLE rollup_ids (
    site_id TEXT NOT NULL,
    kind TEXT NOT NULL,                 -- 'v' visitor_id, 's' session_id, 'r' recipient
    key TEXT NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (site_id, kind, key)
) WITHOUT ROWID;

CREATE TABLE rollup_id_counters (
    site_id TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL
) WITHOUT ROWID;

-- Event-level counts per local day and dimension value; dimension '' is the day total.
CREATE TABLE rollup_days (
    site_id TEXT NOT NULL,
    local_day TEXT NOT NULL,
    dimension TEXT NOT NULL,
    value TEXT NOT NULL,
    events INTEGER NOT NULL DEFAULT 0,
    page_views INTEGER NOT NULL DEFAULT 0,
    custom_events INTEGER NOT NULL DEFAULT 0,
    sessions INTEGER NOT NULL DEFAULT 0,        -- session-start events
    total_value REAL NOT NULL DEFAULT 0,        -- value of every event
    custom_value REAL NOT NULL DEFAULT 0,       -- value of custom events
    secondary INTEGER NOT NULL DEFAULT 0,       -- machine opens or clicks, per dimension
    members BLOB,                               -- visitor or recipient set
    started BLOB,                               -- set of sessions with a start event
    PRIMARY KEY (site_id, dimension, local_day, value)
) WITHOUT ROWID;

-- Per-session state: one JSON object per local day the session has events on.
CREATE TABLE rollup_sessions (
    site_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    visitor INTEGER NOT NULL,                   -- rollup_ids id of the visitor
    first_day TEXT NOT NULL,
    last_day TEXT NOT NULL,
    days BLOB NOT NULL,
    PRIMARY KEY (site_id, session_id)
) WITHOUT ROWID;

CREATE INDEX rollup_sessions_visitor ON rollup_sessions (site_id, visitor);
CREATE INDEX rollup_sessions_multi_day ON rollup_sessions (site_id, last_day)
    WHERE first_day < last_day;

-- Session-level counts keyed by the first and last local day of the sessions' events.
CREATE TABLE rollup_session_groups (
    site_id TEXT NOT NULL,
    report TEXT NOT NULL,
    first_day TEXT NOT NULL,
    last_day TEXT NOT NULL,
    value TEXT NOT NULL,
    sessions INTEGER NOT NULL DEFAULT 0,
    bounces INTEGER NOT NULL DEFAULT 0,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    conversions INTEGER NOT NULL DEFAULT 0,
    conversion_value REAL NOT NULL DEFAULT 0,
    members BLOB,
    PRIMARY KEY (site_id, report, first_day, last_day, value)
) WITHOUT ROWID;

-- The highest events.id the rollups cover. Reports read raw events while a larger id exists
-- (events stored before this migration, or inserted other than by SqliteStore.write_batch)
-- until `trackpixel rollups rebuild` has run.
CREATE TABLE rollup_watermark (
    last_event_id INTEGER NOT NULL
);

INSERT INTO rollup_watermark (last_event_id) VALUES (0);
