-- A columnar copy of the events for filtered reports (see trackpixel/storage/columns.py),
-- kept by SqliteStore.write_batch in the transaction storing each batch.

-- Immutable chunks of one site's events of one local day. A chunk is never changed: merges,
-- erasure and retention delete chunks and insert new ones, and AUTOINCREMENT never reuses
-- an id, so readers cache decoded chunks by id.
CREATE TABLE column_chunks (
    chunk_id INTEGER PRIMARY KEY AUTOINCREMENT,
    site_id TEXT NOT NULL,
    local_day TEXT NOT NULL,
    rows INTEGER NOT NULL,
    data BLOB NOT NULL
);

CREATE INDEX column_chunks_day ON column_chunks (site_id, local_day, rows);

-- Dictionary of each text column: code 0 is NULL, codes are never reused.
CREATE TABLE column_values (
    site_id TEXT NOT NULL,
    column_name TEXT NOT NULL,
    value TEXT NOT NULL,
    code INTEGER NOT NULL,
    PRIMARY KEY (site_id, column_name, value)
) WITHOUT ROWID;

CREATE UNIQUE INDEX column_values_code ON column_values (site_id, column_name, code);

CREATE TABLE column_value_counters (
    site_id TEXT NOT NULL,
    column_name TEXT NOT NULL,
    last_code INTEGER NOT NULL,
    PRIMARY KEY (site_id, column_name)
) WITHOUT ROWID;

-- A random token naming this database in the readers' caches, and a generation counter
-- that a rebuild increments, because it gives the dictionaries' values new codes.
CREATE TABLE column_state (
    token TEXT NOT NULL,
    generation INTEGER NOT NULL
);

INSERT INTO column_state (token, generation) VALUES (lower(hex(randomblob(16))), 0);

INSERT INTO rollup_parts (part, ready) SELECT 'columns', NOT EXISTS (SELECT 1 FROM events);
