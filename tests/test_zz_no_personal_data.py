"""Runs last (files are collected in name order): no raw IP address or plain contact detail
that any test sent may remain in any database, spool, WAL or log file the suite produced."""

from __future__ import annotations

import pytest

SENT_VALUES = [
    # Contact details sent by the privacy and end-to-end tests.
    b"Jane.Citizen@Example.org", b"jane.citizen@example.org", b"Jane.Citizen%40Example.org",
    b"jane.citizen%40example.org", b"+64 21 555 0199", b"64215550199", b"other@example.org",
    b"c@example.org", b"someone@example.com",
    # Sent by the collector input and privacy tests: in URLs, referrers, titles, properties,
    # rejected requests and escaped user data keys.
    b"url.person", b"straddle.person", b"rejected.person", b"+64 21 555 1234", b"Zanzibar",
    b"escaped.person", b"referer.person", b"title.person", b"prop.person",
    b"d.person@example.org", b"d.person%40example.org",
    # Client addresses sent through X-Forwarded-For; only their /24 network may be stored.
    b"203.97.0.77", b"5.9.0.77", b"203.0.113.77", b"198.51.100.9",
]


def test_no_raw_ip_or_contact_detail_on_disk(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.getbasetemp()
    files = [path for path in root.rglob("*") if path.is_file()]
    assert files, "the suite left no files to scan"
    found = []
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # a WAL or journal file removed when its connection closed meanwhile
        for value in SENT_VALUES:
            if value in data:
                found.append(f"{path.relative_to(root)}: {value.decode()}")
    assert found == []
