"""SessionTracker assigns sessions from memory, from changes not yet stored and from the
store, and marks one start per session."""

from __future__ import annotations

from dataclasses import replace

from trackpixel.pipeline.steps import SessionTracker
from trackpixel.storage.records import SessionState

MINUTE_MS = 60_000


def test_stored_session_extended_twice() -> None:
    stored = {"v1": SessionState("s1", "v1", "stored-session", 0)}

    def load(site_id: str, visitor_ids: list[str]) -> dict[str, SessionState]:
        # The store returns new objects on every call, as SqliteStore.load_sessions does.
        return {key: replace(stored[key]) for key in visitor_ids if key in stored}

    tracker = SessionTracker(load, 30 * MINUTE_MS)
    # Each hit is within the timeout of the one before, the second not of the stored one.
    assert tracker.assign("s1", "v1", 25 * MINUTE_MS) == ("stored-session", False)
    assert tracker.assign("s1", "v1", 50 * MINUTE_MS) == ("stored-session", False)


def test_cleared_sessions_keep_their_start() -> None:
    tracker = SessionTracker(lambda site_id, ids: {}, 30 * MINUTE_MS)
    tracker.open_limit = 1
    first, started = tracker.assign("s1", "v1", 0)
    assert started
    # The second visitor's session clears the open sessions before any is stored.
    assert tracker.assign("s1", "v2", 0)[1]
    assert tracker.assign("s1", "v1", MINUTE_MS) == (first, False)
