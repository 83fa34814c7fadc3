-- Funnel step times and custom-event property counts in the report rollups.

-- A visitor's sessions are looked up by visitor and recent last day.
DROP INDEX rollup_sessions_visitor;
CREATE INDEX rollup_sessions_visitor ON rollup_sessions (site_id, visitor, last_day);

-- The visitor and time of each person's event that a funnel step can name, per step key
-- ('n' + separator + event name for events other than page views, 'p' + separator + path for
-- page views) and local day. A day's events are split into chunks of bounded size, so
-- that adding a batch rewrites only the day's last chunk. visitors holds unsigned 32-bit and times
-- 64-bit integers in the machine's byte order, pair by pair in the same order.
CREATE TABLE rollup_steps (
    site_id TEXT NOT NULL,
    step TEXT NOT NULL,
    local_day TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    n INTEGER NOT NULL,
    visitors BLOB NOT NULL,
    times BLOB NOT NULL,
    PRIMARY KEY (site_id, step, local_day, chunk)
) WITHOUT ROWID;

-- Rollup parts added after a database first had events: reports use a part once
-- `trackpixel rollups rebuild` has filled it for the events stored before it existed.
CREATE TABLE rollup_parts (
    part TEXT PRIMARY KEY,
    ready INTEGER NOT NULL
) WITHOUT ROWID;

INSERT INTO rollup_parts (part, ready)
SELECT 'steps', NOT EXISTS (SELECT 1 FROM events)
UNION ALL
SELECT 'properties', NOT EXISTS (SELECT 1 FROM events);
