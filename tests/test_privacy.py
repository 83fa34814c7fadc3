"""Consent, privacy signals and the rights of the people tracked, against the real server.

The server trusts 127.0.0.1 as a proxy, so X-Forwarded-For places each request in a country:
203.97.0.77 is in New Zealand (defaults granted), 5.9.0.77 in Germany (EEA: denied).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from server import Server, SiteInfo, add_site, cli, query, wait_drained

from trackpixel import audiences
from trackpixel.pipeline.userdata import redact_json_body

NZ_IP = "203.97.0.77"
DE_IP = "5.9.0.77"
EMAIL = "Jane.Citizen@Example.org"
PHONE = "+64 21 555 0199"
UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/131.0.0.0 Safari/537.36")
COOKIE = "vid-cookie-0001"
PAGE = "http://localhost/apply"


@dataclass(frozen=True)
class Case:
    """One hit of the matrix and exactly what must be stored for it."""

    name: str
    endpoint: str  # pixel, beacon or api
    ip: str = NZ_IP
    consent: dict[str, str] = field(default_factory=dict)
    gpc: bool = False
    dnt: bool = False
    expected: tuple[str, str, str, str] = ("granted",) * 4  # type: ignore[assignment]
    cookie_used: bool = True
    forwardable: bool = True
    audience: bool = True


G, D = "granted", "denied"
ALL_DENIED = (D, D, D, D)
CASES = [
    Case("pixel nz default", "pixel"),
    Case("pixel eea default", "pixel", ip=DE_IP, expected=ALL_DENIED, cookie_used=False,
         forwardable=False, audience=False),
    Case("pixel eea granted", "pixel", ip=DE_IP,
         consent={"analytics_storage": G, "ad_storage": G, "ad_user_data": G,
                  "ad_personalization": G}),
    Case("pixel gpc", "pixel", gpc=True, expected=(G, D, D, D), forwardable=False,
         audience=False),
    Case("pixel dnt", "pixel", dnt=True, expected=ALL_DENIED, cookie_used=False,
         forwardable=False, audience=False),
    Case("pixel analytics denied", "pixel", consent={"analytics_storage": D},
         expected=(D, G, G, G), cookie_used=False),
    Case("beacon nz default", "beacon"),
    Case("beacon eea default", "beacon", ip=DE_IP, expected=ALL_DENIED, cookie_used=False,
         forwardable=False, audience=False),
    Case("beacon personalization denied", "beacon", consent={"ad_personalization": D},
         expected=(G, G, G, D), audience=False),
    Case("beacon gpc overrides grant", "beacon", gpc=True,
         consent={"ad_user_data": G, "ad_personalization": G}, expected=(G, D, D, D),
         forwardable=False, audience=False),
    Case("beacon dnt", "beacon", dnt=True, consent={"analytics_storage": G},
         expected=ALL_DENIED, cookie_used=False, forwardable=False, audience=False),
    # A server event has no location of the person: the strictest regional default applies.
    Case("api default", "api", expected=ALL_DENIED, cookie_used=False, forwardable=False,
         audience=False),
    Case("api granted", "api",
         consent={"analytics_storage": G, "ad_storage": G, "ad_user_data": G,
                  "ad_personalization": G}),
    Case("api user data denied", "api",
         consent={"analytics_storage": G, "ad_storage": G, "ad_user_data": D,
                  "ad_personalization": G}, expected=(G, G, D, G), forwardable=False),
]


def _compact(consent: dict[str, str]) -> str:
    order = ("analytics_storage", "ad_storage", "ad_user_data", "ad_personalization")
    return "".join(consent[key][0] if key in consent else "-" for key in order)


def _send(server: Server, site: SiteInfo, case: Case, event_id: str) -> None:
    headers = {"User-Agent": UA, "X-Forwarded-For": case.ip}
    if case.gpc:
        headers["Sec-GPC"] = "1"
    if case.dnt:
        headers["DNT"] = "1"
    if case.endpoint == "pixel":
        params = f"s={site.id}&e=Matrix&u={quote(PAGE, safe='')}&id={event_id}&vid={COOKIE}"
        if case.consent:
            params += f"&cs={_compact(case.consent)}"
        response = httpx.get(f"{server.base}/p.gif?{params}", headers=headers)
        assert response.status_code == 200
    elif case.endpoint == "beacon":
        body: dict[str, object] = {"s": site.id, "vid": COOKIE,
                                   "events": [{"e": "Matrix", "u": PAGE, "id": event_id}]}
        if case.consent:
            body["consent"] = case.consent
        response = httpx.post(f"{server.base}/e", content=json.dumps(body), headers=headers)
        assert response.status_code == 204
    else:
        event: dict[str, object] = {"name": "Matrix", "event_id": event_id,
                                    "visitor_id": COOKIE}
        if case.consent:
            event["consent"] = case.consent
        response = httpx.post(f"{server.base}/api/v1/events", json={"events": [event]},
                              headers={**headers, "Authorization": f"Bearer {site.api_key}"})
        assert response.status_code == 200


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, SiteInfo, Server]]:
    data_dir = tmp_path_factory.mktemp("privacy") / "data"
    data_dir.mkdir()
    (data_dir / "config.toml").write_text('trusted_proxies = ["127.0.0.1/32"]\n')
    site = add_site(data_dir, "localhost")
    cli(data_dir, "sites", "privacy", site.id, "--honor-dnt")
    server = Server(data_dir).start()
    for index, case in enumerate(CASES):
        _send(server, site, case, f"m{index}")
    wait_drained(data_dir)
    yield data_dir, site, server
    server.stop()


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case.name for case in CASES])
def test_consent_matrix(matrix: tuple[Path, SiteInfo, Server], index: int) -> None:
    data_dir, site, _ = matrix
    case = CASES[index]
    event_id = f"m{index}"
    rows = query(data_dir, "SELECT consent_analytics, consent_ad_storage, consent_ad_user_data, "
                           "consent_ad_personalization, cookieless, gpc, dnt, visitor_id "
                           "FROM events WHERE client_event_id = ?", (event_id,))
    assert len(rows) == 1
    *consent, cookieless, gpc, dnt, visitor_id = rows[0]
    assert tuple(consent) == case.expected
    assert cookieless == int(not case.cookie_used and case.endpoint != "api")
    assert gpc == int(case.gpc)
    assert dnt == int(case.dnt)

    cookie_visitor = query(data_dir, "SELECT visitor_id FROM events WHERE client_event_id = 'm0'")
    assert (visitor_id == cookie_visitor[0][0]) == case.cookie_used

    text, params = audiences.forwardable_sql(site.id, "Matrix")
    forwarded = {row[2] for row in _run(data_dir, text, params)}
    assert (event_id in forwarded) == case.forwardable


def _run(data_dir: Path, text: str, params: dict[str, object]) -> list[tuple[object, ...]]:
    import sqlite3

    conn = sqlite3.connect(data_dir / "trackpixel.db")
    try:
        return conn.execute(text, params).fetchall()
    finally:
        conn.close()


def test_audience_follows_personalization(matrix: tuple[Path, SiteInfo, Server]) -> None:
    data_dir, site, _ = matrix
    text, params = audiences.audience_sql(site.id, "Matrix", "2000-01-01", "2100-01-01")
    members = {row[0] for row in _run(data_dir, text, params)}
    listed = cli(data_dir, "audience", "--site", site.id, "--event", "Matrix",
                 "--from", "2000-01-01", "--to", "2100-01-01").stdout.splitlines()[1:]
    assert {line.split(",")[0] for line in listed} == members
    visitors_by_id = dict(query(data_dir, "SELECT client_event_id, visitor_id FROM events"))
    # The cookie visitor appears in several cases; the last of them in send order decides.
    expected: dict[str, bool] = {}
    for index, case in enumerate(CASES):
        expected[str(visitors_by_id[f"m{index}"])] = case.audience
    assert members == {visitor for visitor, allowed in expected.items() if allowed}


def test_strict_mode_collects_nothing(data_dir: Path) -> None:
    (data_dir / "config.toml").write_text('trusted_proxies = ["127.0.0.1/32"]\n')
    site = add_site(data_dir, "localhost")
    cli(data_dir, "sites", "privacy", site.id, "--consent-mode", "strict")
    server = Server(data_dir).start()
    try:
        httpx.get(f"{server.base}/p.gif?s={site.id}&u={quote(PAGE, safe='')}&vid={COOKIE}",
                  headers={"User-Agent": UA, "X-Forwarded-For": DE_IP})
        httpx.get(f"{server.base}/p.gif?s={site.id}&u={quote(PAGE, safe='')}&vid={COOKIE}",
                  headers={"User-Agent": UA, "X-Forwarded-For": NZ_IP})
        wait_drained(data_dir)
    finally:
        server.stop()

    assert query(data_dir, "SELECT country FROM events") == [("NZ",)]
    assert query(data_dir, "SELECT reason, raw, user_agent FROM rejected_hits") == [
        ("consent_denied", None, None)]


def test_urls_scrubbed_and_contacts_hashed(server: Server, site: SiteInfo,
                                           data_dir: Path) -> None:
    page = f"http://localhost/apply?email={quote(EMAIL)}&token=s3cr3t&ref={quote(EMAIL)}&plan=a"
    httpx.get(f"{server.base}/p.gif?s={site.id}&u={quote(page, safe='')}&t={quote(EMAIL)}",
              headers={"User-Agent": UA})
    httpx.post(f"{server.base}/api/v1/events", headers={"Authorization": f"Bearer {site.api_key}"},
               json={"events": [{"name": "Lead Submitted", "event_id": "pii-1",
                                 "user_data": {"email": EMAIL, "phone": PHONE,
                                               "first_name": "Jane", "external_id": "crm-77"}}]})
    wait_drained(data_dir)

    url, title = query(data_dir, "SELECT url, title FROM events WHERE kind = 'page_view'")[0]
    assert url == "http://localhost/apply?ref=redacted&plan=a"
    assert title == "redacted"
    stored = json.loads(str(query(data_dir, "SELECT user_data FROM events WHERE "
                                            "client_event_id = 'pii-1'")[0][0]))
    import hashlib
    assert stored["em"] == hashlib.sha256(b"jane.citizen@example.org").hexdigest()
    assert stored["ph"] == hashlib.sha256(b"64215550199").hexdigest()
    assert stored["fn"] == hashlib.sha256(b"jane").hexdigest()
    assert stored["external_id"] == hashlib.sha256(b"crm-77").hexdigest()


def _person_events(server: Server, site: SiteInfo, cookie: str, email: str) -> None:
    granted = {"analytics_storage": G, "ad_storage": G, "ad_user_data": G,
               "ad_personalization": G}
    body = {"s": site.id, "vid": cookie, "consent": granted,
            "events": [{"e": "page_view", "u": "http://localhost/"},
                       {"e": "Lead Submitted", "u": "http://localhost/apply"}]}
    httpx.post(f"{server.base}/e", content=json.dumps(body), headers={"User-Agent": UA})
    httpx.post(f"{server.base}/api/v1/events", headers={"Authorization": f"Bearer {site.api_key}"},
               json={"events": [{"name": "Application Settled", "event_id": f"s-{cookie}",
                                 "visitor_id": cookie, "consent": granted,
                                 "user_data": {"email": email}}]})


def test_export_and_erase_by_email_cli(server: Server, site: SiteInfo, data_dir: Path) -> None:
    _person_events(server, site, "person-a-cookie", EMAIL)
    _person_events(server, site, "person-b-cookie", "other@example.org")
    wait_drained(data_dir)

    exported = json.loads(cli(data_dir, "privacy", "export", EMAIL, "--by", "email",
                              "--site", site.id).stdout)
    assert sorted(event["name"] for event in exported["events"]) == [
        "Application Settled", "Lead Submitted", "page_view"]
    assert len(exported["open_sessions"]) == 1

    status = json.loads(cli(data_dir, "privacy", "erase", EMAIL, "--by", "email", "--site",
                            site.id).stdout)
    assert status["status"] == "done"
    assert status["events_erased"] == 3
    remaining = query(data_dir, "SELECT name FROM events ORDER BY name")
    assert remaining == [("Application Settled",), ("Lead Submitted",), ("page_view",)]
    audit = query(data_dir, "SELECT * FROM privacy_requests")
    assert EMAIL.lower() not in repr(audit).lower()
    assert query(data_dir, "SELECT selector_hashes FROM privacy_requests") == [(None,)]


def test_export_and_erase_by_visitor_api(server: Server, site: SiteInfo,
                                         data_dir: Path) -> None:
    _person_events(server, site, "person-c-cookie", "c@example.org")
    wait_drained(data_dir)
    auth = {"Authorization": f"Bearer {site.api_key}"}

    exported = httpx.post(f"{server.base}/api/v1/privacy/export", headers=auth,
                          json={"visitor_id": "person-c-cookie"})
    erase = httpx.post(f"{server.base}/api/v1/privacy/erase", headers=auth,
                       json={"visitor_id": "person-c-cookie"})
    request_id = erase.json()["request_id"]
    status = {}
    for _ in range(100):
        status = httpx.get(f"{server.base}/api/v1/privacy/requests/{request_id}",
                           headers=auth).json()
        if status["status"] == "done":
            break
        import time
        time.sleep(0.1)

    assert exported.status_code == 200
    assert len(exported.json()["events"]) == 3
    assert erase.status_code == 202
    assert status["status"] == "done"
    assert status["events_erased"] == 3
    assert query(data_dir, "SELECT COUNT(*) FROM events") == [(0,)]
    unauthorized = httpx.post(f"{server.base}/api/v1/privacy/export",
                              json={"visitor_id": "person-c-cookie"})
    assert unauthorized.status_code == 401
    # An id past SQLite's 64-bit integers names no request.
    too_large = httpx.get(f"{server.base}/api/v1/privacy/requests/{2**63}", headers=auth)
    assert too_large.status_code == 404
    assert too_large.json()["error"]["code"] == "not_found"


def test_retention_rolls_up_then_deletes(data_dir: Path, site: SiteInfo) -> None:
    from trackpixel.pipeline.maintenance import DAY_MS, Maintenance
    from trackpixel.storage.sqlite import SqliteStore

    server = Server(data_dir).start()
    try:
        for number in range(3):
            httpx.get(f"{server.base}/p.gif?s={site.id}&u={quote(PAGE, safe='')}&id=r{number}",
                      headers={"User-Agent": UA})
        wait_drained(data_dir)
    finally:
        server.stop()
    cli(data_dir, "sites", "privacy", site.id, "--retention-days", "1")
    store = SqliteStore(data_dir / "trackpixel.db")
    day = query(data_dir, "SELECT local_day FROM events LIMIT 1")[0][0]

    Maintenance(store.conn, lambda: []).apply_retention(
        int(__import__("time").time() * 1000) + 3 * DAY_MS)
    store.close()

    assert query(data_dir, "SELECT COUNT(*) FROM events") == [(0,)]
    assert query(data_dir, "SELECT local_day, name, events, visitors FROM daily_rollups") == [
        (day, "page_view", 3, 1)]


def _files_bytes(directory: Path) -> bytes:
    """Return the bytes of every file under ``directory``: databases, spools, WALs, logs."""
    return b"".join(path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file())


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


REJECTED_PHONE = "+64 21 555 1234"


def test_api_rejection_hashes_contact_details(server: Server, site: SiteInfo,
                                               data_dir: Path) -> None:
    contact = {"email": "rejected.person@example.org", "phone": REJECTED_PHONE,
               "first_name": "Zanzibar", "city": "Timaru"}
    batch = {"events": [{"name": "Lead", "event_id": "r1", "user_data": contact},
                        {"event_id": "r2"}]}
    endpoint = f"{server.base}/api/v1/events"
    invalid = httpx.post(endpoint, json=batch, headers={"Authorization": f"Bearer {site.api_key}"})
    unauthorized = httpx.post(endpoint, json=batch, headers={"Authorization": "Bearer wrong"})
    malformed = httpx.post(endpoint, headers={"Authorization": f"Bearer {site.api_key}"},
                           content=b'{"events": [{"user_data": {"phone": "+64 21 555 1234", '
                                   b'"first_name": "Zanzibar"')
    wait_drained(data_dir)

    assert (invalid.status_code, unauthorized.status_code, malformed.status_code) == (
        400, 401, 400)
    rows = query(data_dir, "SELECT reason, raw FROM rejected_hits ORDER BY id")
    assert [row[0] for row in rows] == ["invalid_field", "unauthorized", "malformed_json"]
    assert rows[1][1] is None
    for _reason, raw in (rows[0], rows[2]):
        assert b"555 1234" not in bytes(raw)
        assert b"Zanzibar" not in bytes(raw)
        assert b"rejected.person" not in bytes(raw)
    stored = json.loads(bytes(rows[0][1]))["events"][0]["user_data"]
    assert stored == {"em": _digest("rejected.person@example.org"), "ph": _digest("64215551234"),
                      "fn": _digest("zanzibar"), "city": "redacted"}
    assert bytes(rows[2][1]) == (b'{"events": [{"user_data": {"phone": "redacted", '
                                 b'"first_name": "redacted"')
    on_disk = _files_bytes(data_dir)
    assert REJECTED_PHONE.encode() not in on_disk
    assert b"Zanzibar" not in on_disk


def test_beacon_escaped_user_data_key(server: Server, site: SiteInfo, data_dir: Path) -> None:
    # "\u0075d" is "ud" written with a JSON escape.
    event = '{"e": "Lead", "u": "http://localhost/apply", ' \
            '"\\u0075d": {"email": "escaped.person@example.org"}}'
    body = f'{{"s": "{site.id}", "events": [{event}]}}'
    response = httpx.post(f"{server.base}/e", content=body, headers={"User-Agent": UA})
    spooled = _files_bytes(data_dir / "spool")
    wait_drained(data_dir)

    assert response.status_code == 204
    assert b"escaped.person" not in spooled
    stored = query(data_dir, "SELECT user_data FROM events")
    assert stored == [(json.dumps({"em": _digest("escaped.person@example.org")},
                                  separators=(",", ":")),)]


def test_referer_and_beacon_masked_in_spool(server: Server, site: SiteInfo,
                                            data_dir: Path) -> None:
    httpx.get(f"{server.base}/p.gif?s={site.id}&e=FromReferer", headers={
        "User-Agent": UA, "Referer": "http://localhost/welcome?addr=referer.person@example.org"})
    httpx.post(f"{server.base}/e", headers={"User-Agent": UA}, content=json.dumps(
        {"s": site.id, "events": [{"e": "FromBeacon", "t": "Hello title.person@example.org",
                                   "u": "http://localhost/hi?addr=url.person@example.org"}]}))
    spooled = _files_bytes(data_dir / "spool")
    wait_drained(data_dir)

    for sent in (b"referer.person", b"title.person", b"url.person"):
        assert sent not in spooled
    stored = query(data_dir, "SELECT name, url, title FROM events ORDER BY name")
    assert stored == [("FromBeacon", "http://localhost/hi?addr=redacted", "Hello redacted"),
                      ("FromReferer", "http://localhost/welcome?addr=redacted", None)]


def test_rejection_details_masked(server: Server, site: SiteInfo, data_dir: Path) -> None:
    # Validation messages quote the offending field name or value back.
    api = httpx.post(f"{server.base}/api/v1/events",
                     headers={"Authorization": f"Bearer {site.api_key}"}, json={"events": [
                         {"name": "Lead", "event_id": "detail-1", "field.person@example.org": 1}]})
    assert api.status_code == 400
    httpx.post(f"{server.base}/e", headers={"User-Agent": UA}, content=json.dumps(
        {"s": site.id, "events": [{"e": "Lead", "u": PAGE,
                                   "ud": {"key.person@example.org": "x"}}]}))
    spooled = _files_bytes(data_dir / "spool")
    wait_drained(data_dir)

    details = [str(row[0]) for row in query(data_dir, "SELECT detail FROM rejected_hits")]
    assert any("redacted" in detail for detail in details), details
    for sent in (b"field.person", b"key.person"):
        assert sent not in spooled
        assert sent.decode() not in " ".join(details)
    assert b"field.person" not in _files_bytes(data_dir)


def test_properties_masked_on_both_paths(server: Server, site: SiteInfo,
                                         data_dir: Path) -> None:
    httpx.get(f"{server.base}/p.gif?s={site.id}&e=Prop&u={quote(PAGE, safe='')}"
              f"&p.contact=prop.person%40example.org&p.plan=pro", headers={"User-Agent": UA})
    httpx.post(f"{server.base}/e", headers={"User-Agent": UA}, content=json.dumps(
        {"s": site.id, "events": [{"e": "Prop", "u": PAGE,
                                   "p": {"contact": "prop.person@example.org", "plan": "pro"}}]}))
    wait_drained(data_dir)

    stored = query(data_dir, "SELECT source, props FROM events ORDER BY source")
    assert [(source, json.loads(str(props))) for source, props in stored] == [
        ("beacon", {"contact": "redacted", "plan": "pro"}),
        ("pixel", {"contact": "redacted", "plan": "pro"})]
    assert b"prop.person" not in _files_bytes(data_dir)


def _rejected_raws(data_dir: Path) -> list[bytes]:
    return [bytes(row[0]) for row in query(data_dir, "SELECT raw FROM rejected_hits "
                                                     "WHERE raw IS NOT NULL ORDER BY id")]


def test_erase_by_email_removes_rejected_hits(server: Server, site: SiteInfo,
                                              data_dir: Path) -> None:
    _person_events(server, site, "person-d-cookie", "d.person@example.org")
    headers = {"User-Agent": UA}
    for cookie in ("person-d-cookie", "person-e-cookie"):
        httpx.get(f"{server.base}/p.gif?s={site.id}&u={quote(PAGE, safe='')}&vid={cookie}"
                  "&v=abc", headers=headers)
    httpx.post(f"{server.base}/e", headers=headers, content=json.dumps(
        {"s": site.id, "vid": "person-d-cookie", "events": [{"e": "Bad", "u": "javascript:x"}]}))
    httpx.post(f"{server.base}/api/v1/events", headers={"Authorization": f"Bearer {site.api_key}"},
               json={"events": [{"event_id": "no-name",
                                 "user_data": {"email": "d.person@example.org"}}]})
    wait_drained(data_dir)
    before = _rejected_raws(data_dir)

    cli(data_dir, "privacy", "erase", "d.person@example.org", "--by", "email", "--site", site.id)

    digest = _digest("d.person@example.org").encode()
    assert len(before) == 4
    assert sum(b"person-d-cookie" in raw or digest in raw for raw in before) == 3
    after = _rejected_raws(data_dir)
    assert len(after) == 1
    assert b"vid=person-e-cookie" in after[0]


def test_erase_by_visitor_removes_rejected_hits(server: Server, site: SiteInfo,
                                                data_dir: Path) -> None:
    """A visitor with rejected hits only, and no stored event, is still erased from them."""
    for cookie in ("person-f-cookie", "person-g-cookie"):
        httpx.get(f"{server.base}/p.gif?s={site.id}&u={quote(PAGE, safe='')}&vid={cookie}"
                  "&cur=dollars&v=1", headers={"User-Agent": UA})
    wait_drained(data_dir)

    cli(data_dir, "privacy", "erase", "person-f-cookie", "--site", site.id)

    after = _rejected_raws(data_dir)
    assert len(after) == 1
    assert b"vid=person-g-cookie" in after[0]


def test_spool_overwrites_deleted_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The spool turns secure_delete on itself, also where the SQLite build's default is off
    (Debian's SQLite is built with it on)."""
    import sqlite3

    from trackpixel import spool
    from trackpixel.storage.sqlite import connect

    def connect_insecure(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
        conn = connect(path, readonly=readonly)
        conn.execute("PRAGMA secure_delete=OFF")
        return conn

    monkeypatch.setattr(spool, "connect", connect_insecure)
    writer = spool.SpoolWriter(tmp_path, cursor_db=tmp_path / "trackpixel.db")
    try:
        setting = writer._conn.execute("PRAGMA secure_delete").fetchone()
    finally:
        writer.close()

    assert setting == (1,)


@pytest.mark.parametrize("key", [b"jane\\u0040example.com", b"+64 21 555 1234",
                                 b"jane@example.com"])
def test_unparsed_body_keys_redacted(key: bytes) -> None:
    # A body cut off at the size limit does not parse, so its keys cannot be looked up.
    body = b'{"s":"site","events":[{"p":{"' + key + b'":1,"plan":"pro"}'
    redacted = redact_json_body(body)
    assert key not in redacted
    assert b'"plan":' in redacted
    assert b'"redacted":1' in redacted
