"""Rows that the pipeline hands to a store, and the storage contract itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Protocol

from trackpixel.vocab import RejectReason


@dataclass(slots=True)
class EventRow:
    """One enriched event, in the column order of the ``events`` table."""

    event_uid: str
    site_id: str
    ts: int
    local_day: str
    local_hour: int
    source: str
    kind: str
    name: str
    client_event_id: str | None
    url: str | None
    host: str | None
    path: str | None
    title: str | None
    referrer: str | None
    referrer_host: str | None
    channel: str
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    utm_term: str | None
    utm_content: str | None
    click_id_type: str | None
    click_id: str | None
    campaign: str | None
    creative: str | None
    placement: str | None
    recipient: str | None
    value: float | None
    currency: str | None
    props: str | None
    visitor_id: str
    session_id: str
    session_start: int
    browser: str | None
    browser_version: str | None
    os: str | None
    os_version: str | None
    device_type: str | None
    is_bot: int
    bot_reason: str | None
    machine_open: int
    ip_anon: str | None
    country: str | None
    consent_analytics: str | None
    consent_ad_storage: str | None
    consent_ad_user_data: str | None
    consent_ad_personalization: str | None
    gpc: int
    dnt: int
    cookieless: int
    user_data: str | None


EVENT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(EventRow))
# ``dataclasses.astuple`` deep-copies every field and cost more than enrichment itself, so rows
# are turned into tuples by reading their attributes.
event_values: Callable[[EventRow], tuple[Any, ...]] = attrgetter(*EVENT_COLUMNS)


@dataclass(slots=True)
class RejectedRow:
    """A hit that could not become an event, kept with its raw request and the reason."""

    hit_uid: str
    received_ts: int
    source: str
    site_id: str | None
    reason: str
    detail: str | None
    raw: bytes | None
    user_agent: str | None


REJECTED_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RejectedRow))
rejected_values: Callable[[RejectedRow], tuple[Any, ...]] = attrgetter(*REJECTED_COLUMNS)


@dataclass(slots=True)
class SessionState:
    """The open session of one visitor, as the processor last saw it."""

    site_id: str
    visitor_id: str
    session_id: str
    last_ts: int


session_values: Callable[[SessionState], tuple[Any, ...]] = attrgetter(
    "site_id", "visitor_id", "session_id", "last_ts")


@dataclass
class ProcessedBatch:
    """The output of one pipeline run over consecutive rows of one spool."""

    spool: str
    last_rowid: int
    events: list[EventRow]
    rejected: list[RejectedRow]
    sessions: list[SessionState]


@dataclass
class WriteResult:
    stored: int
    duplicates: int
    rejected: int


class StoreUnavailable(Exception):
    """The event backend could not be reached or rejected a write; retrying may succeed."""


class EventStore(Protocol):
    """What the processor, the reports and the CLI need from an event backend.

    ``SqliteStore`` and ``ClickHouseStore`` implement it. Sites, salts, spool cursors and
    sessions always live in the SQLite state store, whichever event backend is in use.
    """

    dialect: str
    # True when ``write_batch`` also stores the spool cursor and sessions, in the same
    # transaction as the events (SQLite). Otherwise the processor saves them in the state
    # store after ``write_batch`` returns.
    stores_progress: bool

    def write_batch(self, batch: ProcessedBatch) -> WriteResult:
        """Store a batch's events and rejected hits; a replayed batch stores nothing twice."""

    def expect_replay(self, spool: str) -> None:
        """Check the next batches of ``spool`` for ids that are already stored."""

    def query(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run a report query written with ``:name`` placeholders."""

    def close(self) -> None: ...


def duplicate_rejection(event: EventRow) -> RejectedRow:
    """Return the rejected-hit record of an event whose client event id is already stored."""
    return RejectedRow(
        hit_uid=event.event_uid,
        received_ts=event.ts,
        source=event.source,
        site_id=event.site_id,
        reason=RejectReason.DUPLICATE_EVENT_ID.value,
        detail=f"event {event.name!r} with id {event.client_event_id!r} is already stored",
        raw=None,
        user_agent=None,
    )
