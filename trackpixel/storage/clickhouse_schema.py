"""ClickHouse DDL, applied by versioned migrations that ``schema_migrations`` records.

The same statements run on ClickHouse 18.16 (Debian's package) and on current releases.
With one server, ``events`` and ``rejected_hits`` are ReplacingMergeTree tables. With a
cluster, every shard gets ``events_local`` and ``rejected_hits_local``, and every server gets
``Distributed`` tables named ``events`` and ``rejected_hits`` over them, so reports always read
``events`` whichever layout is in use.

Sorting keys end with the row's unique id, so two copies of one event share the whole key and
a merge (or a query with ``FINAL``) keeps one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

# ``visitor_key`` and ``session_key`` are 64-bit hashes of the ids, because exact distinct
# counts over them are several times faster than over the strings (``dialect.translate``).
# They are DEFAULT columns, not MATERIALIZED, so inserts through a Distributed table fill them.
# Columns whose vocabulary is small, and ``path``, which reports group by, use LowCardinality.
# ClickHouse 18.16 accepts that type only with allow_experimental_low_cardinality_type = 1,
# which the store sets for 18.x servers.
EVENTS_COLUMNS = """
    event_uid String,
    site_id LowCardinality(String),
    ts UInt64,
    local_day Date,
    local_hour UInt8,
    source LowCardinality(String),
    kind LowCardinality(String),
    name LowCardinality(String),
    client_event_id Nullable(String),
    url Nullable(String),
    host LowCardinality(Nullable(String)),
    path LowCardinality(Nullable(String)),
    title Nullable(String),
    referrer Nullable(String),
    referrer_host LowCardinality(Nullable(String)),
    channel LowCardinality(String),
    utm_source LowCardinality(Nullable(String)),
    utm_medium LowCardinality(Nullable(String)),
    utm_campaign LowCardinality(Nullable(String)),
    utm_term Nullable(String),
    utm_content Nullable(String),
    click_id_type LowCardinality(Nullable(String)),
    click_id Nullable(String),
    campaign LowCardinality(Nullable(String)),
    creative LowCardinality(Nullable(String)),
    placement LowCardinality(Nullable(String)),
    recipient Nullable(String),
    value Nullable(Float64),
    currency LowCardinality(Nullable(String)),
    props Nullable(String),
    visitor_id String,
    session_id String,
    session_start UInt8,
    browser LowCardinality(Nullable(String)),
    browser_version LowCardinality(Nullable(String)),
    os LowCardinality(Nullable(String)),
    os_version LowCardinality(Nullable(String)),
    device_type LowCardinality(Nullable(String)),
    is_bot UInt8,
    bot_reason LowCardinality(Nullable(String)),
    machine_open UInt8,
    ip_anon Nullable(String),
    country LowCardinality(Nullable(String)),
    consent_analytics LowCardinality(Nullable(String)),
    consent_ad_storage LowCardinality(Nullable(String)),
    consent_ad_user_data LowCardinality(Nullable(String)),
    consent_ad_personalization LowCardinality(Nullable(String)),
    gpc UInt8,
    dnt UInt8,
    cookieless UInt8,
    user_data Nullable(String),
    visitor_key UInt64 DEFAULT cityHash64(visitor_id),
    session_key UInt64 DEFAULT cityHash64(session_id)
"""

REJECTED_COLUMNS = """
    hit_uid String,
    received_ts UInt64,
    source LowCardinality(String),
    site_id LowCardinality(Nullable(String)),
    reason LowCardinality(String),
    detail Nullable(String),
    raw Nullable(String),
    user_agent Nullable(String)
"""

EVENTS_ENGINE = """ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(local_day)
ORDER BY (site_id, local_day, name, visitor_id, ts, event_uid)"""

REJECTED_ENGINE = """ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(toDate(toDateTime(intDiv(received_ts, 1000))))
ORDER BY (reason, received_ts, hit_uid)"""


@dataclass(frozen=True)
class Migration:
    """One schema version: statements for each storage server and, with a cluster, the
    Distributed tables created on every server after all shards have their local tables."""

    name: str
    local: tuple[str, ...]
    distributed: tuple[str, ...] = ()


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        name="0001_initial",
        local=(
            f"CREATE TABLE IF NOT EXISTS {{db}}.{{events}} ({EVENTS_COLUMNS}) {EVENTS_ENGINE}",
            f"CREATE TABLE IF NOT EXISTS {{db}}.{{rejected}} ({REJECTED_COLUMNS}) "
            f"{REJECTED_ENGINE}",
        ),
        distributed=(
            # Sharding by visitor keeps each visitor's events on one shard, and a replayed
            # event lands where its first copy is, so the shard's merges collapse the two.
            "CREATE TABLE IF NOT EXISTS {db}.events AS {db}.events_local "
            "ENGINE = Distributed({cluster}, {db}, events_local, sipHash64(visitor_id))",
            "CREATE TABLE IF NOT EXISTS {db}.rejected_hits AS {db}.rejected_hits_local "
            "ENGINE = Distributed({cluster}, {db}, rejected_hits_local, sipHash64(hit_uid))",
        ),
    ),
    Migration(
        name="0002_copy_checkpoints",
        local=(
            # ``trackpixel migrate`` progress: the highest source row id copied per table.
            "CREATE TABLE IF NOT EXISTS {db}.copy_checkpoints (source String, "
            "table_name String, last_id UInt64, updated DateTime) "
            "ENGINE = ReplacingMergeTree ORDER BY (source, table_name, last_id)",
        ),
    ),
)

SCHEMA_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
    "(name String, applied_ts DateTime) ENGINE = ReplacingMergeTree ORDER BY name"
)
