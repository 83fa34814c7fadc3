"""Bad input against the real server: every response and every recorded rejection."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import orjson
import pytest
from server import Server, SiteInfo, cli, query, wait_drained

from trackpixel.collector.images import GIF

PAGE = quote("http://localhost/pricing", safe="")
BROWSER_UA = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
              "(KHTML, like Gecko) Version/17.4 Safari/605.1.15")


@dataclass(frozen=True)
class PixelCase:
    name: str
    query: str
    reason: str
    # Whether the rejection is filed under the site that the query names.
    attributed: bool


PIXEL_CASES = [
    PixelCase("oversized query", "s={site}&u=" + PAGE + "&p.x=" + "a" * 20_000, "too_large",
              True),
    PixelCase("oversized, blank first site", "s=&s={site}&u=" + PAGE + "&p.x=" + "a" * 20_000,
              "too_large", True),
    PixelCase("invalid utf8", "s={site}&u=" + PAGE + "&t=%FF%FE", "invalid_utf8", True),
    PixelCase("unknown site", "s=s_doesnotexist&u=" + PAGE, "unknown_site", False),
    PixelCase("missing site", "u=" + PAGE, "missing_site", False),
    PixelCase("garbage", "%%%&&&===;;", "missing_site", False),
    PixelCase("foreign domain", "s={site}&u=" + quote("https://evil.example/x", safe=""),
              "domain_not_allowed", True),
    PixelCase("bad value", "s={site}&u=" + PAGE + "&v=abc", "invalid_field", True),
    PixelCase("huge value", "s={site}&u=" + PAGE + "&v=1e308", "invalid_field", True),
    PixelCase("bad currency", "s={site}&u=" + PAGE + "&v=1&cur=dollars", "invalid_field", True),
    PixelCase("page not http", "s={site}&u=" + quote("javascript:alert(1)", safe=""),
              "invalid_field", True),
]


def _rejections(data_dir: Path) -> list[tuple[object, ...]]:
    wait_drained(data_dir)
    return query(data_dir, "SELECT reason, detail, raw FROM rejected_hits ORDER BY id")


@pytest.mark.parametrize("case", PIXEL_CASES, ids=[case.name for case in PIXEL_CASES])
def test_pixel_answers_image_and_records_reason(server: Server, site: SiteInfo,
                                                data_dir: Path, case: PixelCase) -> None:
    response = httpx.get(f"{server.base}/p.gif?{case.query.format(site=site.id)}",
                         headers={"User-Agent": BROWSER_UA})

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.content == GIF
    assert response.headers["cache-control"] == "no-store, no-cache, must-revalidate, private"
    rejected = _rejections(data_dir)
    assert [row[0] for row in rejected] == [case.reason]
    assert query(data_dir, "SELECT site_id FROM rejected_hits") == [
        (site.id if case.attributed else None,)]
    assert query(data_dir, "SELECT COUNT(*) FROM events") == [(0,)]


def test_raw_non_ascii_request_line(server: Server, site: SiteInfo, data_dir: Path) -> None:
    """Unescaped non-ASCII bytes on the request line are invalid HTTP: granian's parser answers
    400 before trackpixel runs (browsers and mail clients always percent-encode). The server
    keeps serving, and the percent-encoded form is recorded as invalid_utf8 above."""
    request = (f"GET /p.gif?s={site.id}&t=\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Connection: close\r\n\r\n").encode("latin-1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    after = httpx.get(f"{server.base}/p.gif?s={site.id}&u={PAGE}",
                      headers={"User-Agent": BROWSER_UA})

    assert reply.startswith(b"HTTP/1.1 400")
    assert after.content == GIF
    wait_drained(data_dir)
    assert query(data_dir, "SELECT COUNT(*) FROM events") == [(1,)]


def test_png_pixel(server: Server, site: SiteInfo, data_dir: Path) -> None:
    response = httpx.get(f"{server.base}/p.png?s={site.id}&u={PAGE}",
                         headers={"User-Agent": BROWSER_UA})

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")
    wait_drained(data_dir)
    assert query(data_dir, "SELECT name, path FROM events") == [("page_view", "/pricing")]


def test_beacon_malformed_json(server: Server, data_dir: Path) -> None:
    response = httpx.post(f"{server.base}/e", content=b"{not json",
                          headers={"Content-Type": "text/plain"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"
    rejected = _rejections(data_dir)
    assert [row[0] for row in rejected] == ["malformed_json"]
    assert rejected[0][2] == b"{not json"


def test_beacon_oversized_body(server: Server, data_dir: Path) -> None:
    response = httpx.post(f"{server.base}/e", content=b"x" * 200_000)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert [row[0] for row in _rejections(data_dir)] == ["too_large"]


def test_beacon_rejects_one_bad_event_keeps_rest(server: Server, site: SiteInfo,
                                                 data_dir: Path) -> None:
    body = {"s": site.id, "events": [
        {"e": "Lead Submitted", "u": "http://localhost/apply", "v": 10, "cur": "NZD"},
        {"e": "Lead Submitted", "u": "http://localhost/apply", "v": "ten"},
    ]}
    response = httpx.post(f"{server.base}/e", json=body, headers={"User-Agent": BROWSER_UA})

    assert response.status_code == 204
    assert [row[0] for row in _rejections(data_dir)] == ["invalid_field"]
    assert query(data_dir, "SELECT name, value, currency FROM events") == [
        ("Lead Submitted", 10.0, "NZD")]


def test_click_tampered_token_not_followed(server: Server, site: SiteInfo,
                                           data_dir: Path) -> None:
    url = cli(data_dir, "link", "https://example.com/offer", "--site", site.id,
              "--collector", server.base).stdout.strip()
    token = url.rsplit("/", 1)[1]
    body, mac = token.split(".")
    forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + mac

    response = httpx.get(f"{server.base}/c/{forged}")

    assert response.status_code == 400
    assert "location" not in response.headers
    assert "Invalid link" in response.text
    assert [row[0] for row in _rejections(data_dir)] == ["bad_signature"]


def test_click_unsigned_destination_not_followed(server: Server, data_dir: Path) -> None:
    response = httpx.get(f"{server.base}/c/https://evil.example")

    assert response.status_code == 400
    assert "location" not in response.headers
    assert [row[0] for row in _rejections(data_dir)] == ["bad_signature"]


def test_open_token_rejected_as_click(server: Server, site: SiteInfo, data_dir: Path) -> None:
    tag = cli(data_dir, "email-pixel", "--site", site.id, "--campaign", "c1", "--recipient",
              "r1", "--collector", server.base).stdout
    token = tag.split("/o/")[1].split(".gif")[0]

    response = httpx.get(f"{server.base}/c/{token}")

    assert response.status_code == 400
    assert "location" not in response.headers


def test_open_tampered_token_still_image(server: Server, site: SiteInfo,
                                         data_dir: Path) -> None:
    tag = cli(data_dir, "email-pixel", "--site", site.id, "--campaign", "spring", "--recipient",
              "alice-1", "--collector", server.base).stdout
    token = tag.split("/o/")[1].split(".gif")[0]
    body, mac = token.split(".")
    forged = body.replace(body[5], "A" if body[5] != "A" else "B", 1)

    response = httpx.get(f"{server.base}/o/{forged}.{mac}.gif")

    assert response.status_code == 200
    assert response.content == GIF
    assert [row[0] for row in _rejections(data_dir)] == ["bad_signature"]
    assert query(data_dir, "SELECT COUNT(*) FROM events") == [(0,)]


def test_spoofed_forwarded_for_ignored(server: Server, site: SiteInfo, data_dir: Path) -> None:
    """Without trusted proxies, X-Forwarded-For is never believed."""
    httpx.get(f"{server.base}/p.gif?s={site.id}&u={PAGE}",
              headers={"X-Forwarded-For": "203.0.113.77", "User-Agent": BROWSER_UA})
    wait_drained(data_dir)

    assert query(data_dir, "SELECT ip_anon FROM events") == [("127.0.0.0",)]


def test_trusted_proxy_rightmost_untrusted_hop(data_dir: Path, site: SiteInfo) -> None:
    (data_dir / "config.toml").write_text('trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]\n')
    running = Server(data_dir).start()
    try:
        # The client forged the first entry; the proxy chain appended the real address.
        httpx.get(f"{running.base}/p.gif?s={site.id}&u={PAGE}",
                  headers={"X-Forwarded-For": "198.51.100.9, 203.0.113.77, 10.1.2.3",
                           "User-Agent": BROWSER_UA})
        wait_drained(data_dir)
    finally:
        running.stop()

    assert query(data_dir, "SELECT ip_anon FROM events") == [("203.0.113.0",)]


def test_api_requires_key(server: Server, data_dir: Path) -> None:
    response = httpx.post(f"{server.base}/api/v1/events",
                          json={"events": [{"name": "Settled", "event_id": "x"}]})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert [row[0] for row in _rejections(data_dir)] == ["unauthorized"]


def test_api_invalid_batch_lists_errors(server: Server, site: SiteInfo, data_dir: Path) -> None:
    response = httpx.post(
        f"{server.base}/api/v1/events",
        headers={"Authorization": f"Bearer {site.api_key}"},
        json={"events": [{"name": "Settled", "event_id": "a1", "value": 5},
                         {"event_id": "a2"}]})

    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert details == ["events[0]: currency is required when value is given",
                       "events[1]: event name is missing"]
    assert query(data_dir, "SELECT COUNT(*) FROM events") == [(0,)]


def test_api_idempotent_on_event_id(server: Server, site: SiteInfo, data_dir: Path) -> None:
    batch = {"events": [{"name": "Application Settled", "event_id": "crm-991",
                         "timestamp": "2026-11-30T21:00:00Z", "value": 1200.5,
                         "currency": "NZD", "properties": {"lender": "ASB"}}]}
    headers = {"Authorization": f"Bearer {site.api_key}"}
    first = httpx.post(f"{server.base}/api/v1/events", json=batch, headers=headers)
    second = httpx.post(f"{server.base}/api/v1/events", json=batch, headers=headers)

    assert first.json() == {"accepted": 1}
    assert second.json() == {"accepted": 1}
    wait_drained(data_dir)
    rows = query(data_dir, "SELECT name, client_event_id, value, currency, local_day, source, "
                           "props FROM events")
    # 21:00 UTC on 30 November is 10:00 on 1 December in Auckland (NZDT, UTC+13).
    assert rows == [("Application Settled", "crm-991", 1200.5, "NZD", "2026-12-01", "api",
                     '{"lender":"ASB"}')]
    assert [row[0] for row in _rejections(data_dir)] == ["duplicate_event_id"]


def test_robots_and_health(server: Server) -> None:
    robots = httpx.get(f"{server.base}/robots.txt")
    health = httpx.get(f"{server.base}/healthz")

    assert "Disallow: /p.gif" in robots.text
    assert health.json()["status"] == "ok"


@dataclass(frozen=True)
class AddressInUrlCase:
    name: str
    param: str
    sent: str
    column: str
    stored: str


ADDRESS_IN_URL_CASES = [
    AddressInUrlCase("page url", "u", "http://localhost/thanks?addr=url.person@example.org&plan=pro",
                     "url", "http://localhost/thanks?addr=redacted&plan=pro"),
    AddressInUrlCase("referrer", "r",
                     "http://localhost/thanks?addr=url.person@example.org&plan=pro",
                     "referrer", "http://localhost/thanks?addr=redacted&plan=pro"),
    AddressInUrlCase("user info", "u", "http://url.person@evil.example@localhost/a", "url",
                     "http://redacted@localhost/a"),
    AddressInUrlCase("encoded twice", "u",
                     "http://localhost/go?next=" + quote("/thanks?addr=url.person@example.org"
                                                         "&plan=pro", safe=""),
                     "url", "http://localhost/go?next=%2Fthanks%3Faddr%3Dredacted%26plan%3Dpro"),
]


@pytest.mark.parametrize("case", ADDRESS_IN_URL_CASES,
                         ids=[case.name for case in ADDRESS_IN_URL_CASES])
def test_pixel_url_address_masked(server: Server, site: SiteInfo, data_dir: Path,
                                  case: AddressInUrlCase) -> None:
    params = f"s={site.id}&e=Thanks&{case.param}={quote(case.sent, safe='')}"
    if case.param != "u":
        params += f"&u={PAGE}"
    response = httpx.get(f"{server.base}/p.gif?{params}", headers={"User-Agent": BROWSER_UA})

    assert response.content == GIF
    assert _rejections(data_dir) == []
    stored = query(data_dir, f"SELECT {case.column} FROM events")
    assert stored == [(case.stored,)]


def test_pixel_cut_leaves_no_address_part(server: Server, site: SiteInfo,
                                          data_dir: Path) -> None:
    head = f"s={site.id}&u={PAGE}&p.x="
    # The address starts 8 bytes before the 8192-byte cut of max_query_bytes, and its
    # masked form ends right at the cut.
    query_string = head + "a" * (8192 - len(head) - 13) + "&p.y=straddle.person%40example.org"
    httpx.get(f"{server.base}/p.gif?{query_string}", headers={"User-Agent": BROWSER_UA})

    rejected = _rejections(data_dir)
    assert [row[0] for row in rejected] == ["too_large"]
    raw = bytes(rejected[0][2])
    assert raw.endswith(b"&p.y=redacted")
    assert b"straddle" not in raw


def test_pixel_at_http_server_uri_limit(server: Server, site: SiteInfo, data_dir: Path) -> None:
    """granian 2.8.9 returns 414 itself for a request target longer than 65,534 bytes, which
    is ``/p.gif?`` and 65,527 bytes of query string. Up to that size the pixel returns its
    image."""
    head = f"s={site.id}&u={PAGE}&p.x="
    longest = head + "a" * (65_527 - len(head))
    # httpx refuses URLs this long, so the requests are written to the socket.
    largest = _raw_get(server.port, f"/p.gif?{longest}")
    beyond = _raw_get(server.port, f"/p.gif?{longest}a")

    assert largest.startswith(b"HTTP/1.1 200")
    assert largest.endswith(GIF)
    assert beyond.startswith(b"HTTP/1.1 414")
    rejected = _rejections(data_dir)
    assert [row[0] for row in rejected] == ["too_large"]
    assert rejected[0][1] == "query string of 65527 bytes exceeds 8192"


def _raw_get(port: int, target: str) -> bytes:
    request = (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {BROWSER_UA}\r\n"
               "Connection: close\r\n\r\n").encode("ascii")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_head_requests_record_nothing(server: Server, site: SiteInfo, data_dir: Path) -> None:
    open_tag = cli(data_dir, "email-pixel", "--site", site.id, "--campaign", "c1", "--recipient",
                   "r1", "--collector", server.base).stdout
    open_url = f"{server.base}/o/{open_tag.split('/o/')[1].split('.gif')[0]}.gif"
    click_url = cli(data_dir, "link", "https://example.com/offer", "--site", site.id,
                    "--collector", server.base).stdout.strip()
    headers = {"User-Agent": BROWSER_UA}

    pixel = httpx.head(f"{server.base}/p.gif?s={site.id}&u={PAGE}", headers=headers)
    opened = httpx.head(open_url, headers=headers)
    clicked = httpx.head(click_url, headers=headers)
    tampered = httpx.head(click_url[:-2] + ("AA" if not click_url.endswith("AA") else "BB"),
                          headers=headers)
    # One GET afterwards shows that the HEAD requests were spooled before it if at all.
    httpx.get(f"{server.base}/p.gif?s={site.id}&u={PAGE}&e=After", headers=headers)

    assert pixel.status_code == 200
    assert pixel.headers["content-type"] == "image/gif"
    assert pixel.headers["content-length"] == str(len(GIF))
    assert pixel.headers["cache-control"] == "no-store, no-cache, must-revalidate, private"
    assert opened.status_code == 200
    assert opened.headers["content-type"] == "image/gif"
    assert clicked.status_code == 302
    assert clicked.headers["location"] == "https://example.com/offer"
    assert tampered.status_code == 400
    assert _rejections(data_dir) == []
    assert query(data_dir, "SELECT name FROM events") == [("After",)]


def test_pixel_other_methods_rejected(server: Server, site: SiteInfo, data_dir: Path) -> None:
    url = f"{server.base}/p.gif?s={site.id}&u={PAGE}"
    responses = [httpx.request(method, url, headers={"User-Agent": BROWSER_UA})
                 for method in ("POST", "DELETE", "FOO")]

    for response in responses:
        assert response.status_code == 200
        assert response.content == GIF
    rejected = _rejections(data_dir)
    assert [row[0] for row in rejected] == ["method_not_allowed"] * 3
    assert [row[1] for row in rejected] == [
        f"the pixel records GET requests, not {method}" for method in ("POST", "DELETE", "FOO")]
    assert query(data_dir, "SELECT COUNT(*) FROM events") == [(0,)]


def test_open_and_click_other_methods(server: Server, site: SiteInfo, data_dir: Path) -> None:
    open_tag = cli(data_dir, "email-pixel", "--site", site.id, "--campaign", "c1", "--recipient",
                   "r1", "--collector", server.base).stdout
    open_url = f"{server.base}/o/{open_tag.split('/o/')[1].split('.gif')[0]}.gif"
    click_url = cli(data_dir, "link", "https://example.com/offer", "--site", site.id,
                    "--collector", server.base).stdout.strip()

    opened = httpx.post(open_url, headers={"User-Agent": BROWSER_UA})
    clicked = httpx.post(click_url, headers={"User-Agent": BROWSER_UA})

    assert opened.status_code == 200
    assert opened.content == GIF
    assert clicked.status_code == 405
    assert clicked.headers["allow"] == "GET, HEAD"
    assert "location" not in clicked.headers
    assert clicked.json()["error"]["code"] == "method_not_allowed"
    assert [row[0] for row in _rejections(data_dir)] == ["method_not_allowed"] * 2
    assert query(data_dir, "SELECT COUNT(*) FROM events") == [(0,)]


def _site_ids(data_dir: Path) -> list[tuple[object, ...]]:
    wait_drained(data_dir)
    return query(data_dir, "SELECT reason, site_id FROM rejected_hits ORDER BY id")


def test_collector_rejections_name_site(server: Server, site: SiteInfo, data_dir: Path) -> None:
    open_tag = cli(data_dir, "email-pixel", "--site", site.id, "--campaign", "c1", "--recipient",
                   "r1", "--collector", server.base).stdout
    open_token = open_tag.split("/o/")[1].split(".gif")[0]
    click_url = cli(data_dir, "link", "https://example.com/offer", "--site", site.id,
                    "--collector", server.base).stdout.strip()
    body, mac = click_url.rsplit("/", 1)[1].split(".")
    forged_mac = f"{body}.{'A' * len(mac) if not mac.startswith('A') else 'B' * len(mac)}"
    api = f"{server.base}/api/v1/events"
    auth = {"Authorization": f"Bearer {site.api_key}"}
    headers = {"User-Agent": BROWSER_UA}

    httpx.post(f"{server.base}/o/{open_token}.gif", headers=headers)
    httpx.post(click_url, headers=headers)
    httpx.get(f"{server.base}/c/{forged_mac}", headers=headers)
    httpx.post(api, headers=auth, json={"events": [{"event_id": "a1"}]})
    httpx.post(api, headers=auth, content=b"{not json")
    httpx.post(api, headers=auth, content=b"x" * 200_000)
    httpx.post(f"{server.base}/e", json={"s": site.id, "events": [{"ud": "not an object"}]})
    # The processor, not the collector, checks an open token's signature.
    open_body, open_mac = open_token.split(".")
    forged_open_mac = "A" * len(open_mac) if not open_mac.startswith("A") else "B" * len(open_mac)
    httpx.get(f"{server.base}/o/{open_body}.{forged_open_mac}.gif", headers=headers)

    assert _site_ids(data_dir) == [
        ("method_not_allowed", site.id), ("method_not_allowed", site.id),
        ("bad_signature", site.id), ("invalid_field", site.id), ("malformed_json", site.id),
        ("too_large", site.id), ("invalid_field", site.id), ("bad_signature", site.id)]


def test_rejection_names_only_known_sites(server: Server, site: SiteInfo,
                                          data_dir: Path) -> None:
    headers = {"User-Agent": BROWSER_UA}

    httpx.get(f"{server.base}/p.gif?s=s_forged&u={PAGE}", headers=headers)
    httpx.post(f"{server.base}/p.gif?s=s_forged&u={PAGE}", headers=headers)
    httpx.get(f"{server.base}/p.gif?s=s_forged&u={PAGE}&p.x=" + "a" * 9000, headers=headers)
    httpx.post(f"{server.base}/e", json={"s": "s_forged", "events": [{"ud": "x"}]})
    httpx.post(f"{server.base}/api/v1/events", headers={"Authorization": "Bearer wrong"},
               json={"site": site.id, "events": [{"name": "A", "event_id": "a1"}]})

    assert _site_ids(data_dir) == [("unknown_site", None), ("method_not_allowed", None),
                                   ("too_large", None), ("invalid_field", None),
                                   ("unauthorized", None)]


def test_api_unauthenticated_body_not_stored(server: Server, data_dir: Path) -> None:
    body = b'{"events": [{"name": "Settled", "event_id": "x"}]}'
    endpoint = f"{server.base}/api/v1/events"

    missing = httpx.post(endpoint, content=body, headers={"User-Agent": BROWSER_UA})
    wrong = httpx.post(endpoint, content=b"x" * 200_000,
                       headers={"Authorization": "Bearer wrong", "User-Agent": BROWSER_UA})

    assert missing.status_code == 401
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    wait_drained(data_dir)
    assert query(data_dir, "SELECT reason, detail, raw, user_agent FROM rejected_hits "
                           "ORDER BY id") == [
        ("unauthorized", f"missing or unknown API key; body of {len(body)} bytes not stored",
         None, None),
        ("unauthorized", "missing or unknown API key; body of more than 65536 bytes not stored",
         None, None)]
    spooled = b"".join(path.read_bytes() for path in (data_dir / "spool").glob("*"))
    assert b"Settled" not in spooled


@dataclass(frozen=True)
class ApiCase:
    name: str
    change: dict[str, object]
    error: str


ACCEPTED_LIST = ("name, event_id, timestamp, url, value, currency, properties, visitor_id, "
                 "user_data, consent, utm_source, utm_medium, utm_campaign, utm_term, "
                 "utm_content, gclid, gbraid, wbraid, fbclid, msclkid, li_fat_id, ttclid, "
                 "twclid, campaign, creative, placement")
API_CASES = [
    ApiCase("consent value", {"consent": {"analytics_storage": "yes"}},
            "events[0]: consent.analytics_storage must be 'granted' or 'denied', not 'yes'"),
    ApiCase("consent string", {"consent": "granted"},
            "events[0]: consent must be an object of signals (analytics_storage, ad_storage, "
            "ad_user_data, ad_personalization), each 'granted' or 'denied'"),
    ApiCase("consent signal", {"consent": {"analytics": "granted"}},
            "events[0]: consent: unknown signal 'analytics'; known signals: analytics_storage, "
            "ad_storage, ad_user_data, ad_personalization"),
    ApiCase("unknown field", {"unknown_field": 1, "title": "x"},
            f"events[0]: unknown field 'title', 'unknown_field'; accepted fields: "
            f"{ACCEPTED_LIST}"),
    ApiCase("long url", {"url": "https://localhost/" + "a" * 2048},
            "events[0]: url is longer than 2048 characters"),
    ApiCase("long name", {"name": "n" * 201},
            "events[0]: event name is longer than 200 characters"),
    ApiCase("long campaign", {"campaign": "c" * 301},
            "events[0]: campaign is longer than 300 characters"),
    ApiCase("huge value", {"value": -1.7e308},
            "events[0]: value -1.7e+308 is out of range: at most 1e+15 in magnitude"),
    ApiCase("huge timestamp", {"timestamp": 1e308},
            "events[0]: timestamp 1e+308 is in the future (a number is read as Unix seconds)"),
    ApiCase("timestamp in milliseconds", {"timestamp": 1_796_442_000_123},
            "events[0]: timestamp 1796442000123 is in the future (a number is read as Unix "
            "seconds)"),
    ApiCase("old timestamp", {"timestamp": "1999-01-01T00:00:00Z"},
            "events[0]: timestamp '1999-01-01T00:00:00Z' is more than 365 days old"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[case.name for case in API_CASES])
def test_api_rejects_invalid_field(server: Server, site: SiteInfo, data_dir: Path,
                                   case: ApiCase) -> None:
    event = {"name": "Settled", "event_id": "a1", **case.change}
    response = httpx.post(f"{server.base}/api/v1/events", json={"events": [event]},
                          headers={"Authorization": f"Bearer {site.api_key}"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_field"
    assert response.json()["error"]["details"] == [case.error]
    assert [row[0] for row in _rejections(data_dir)] == ["invalid_field"]
    assert query(data_dir, "SELECT COUNT(*) FROM events") == [(0,)]


def test_api_rejects_unknown_body_field(server: Server, site: SiteInfo) -> None:
    response = httpx.post(f"{server.base}/api/v1/events",
                          json={"site": "s_other", "events": [{"name": "A", "event_id": "a"}]},
                          headers={"Authorization": f"Bearer {site.api_key}"})

    assert response.status_code == 400
    assert response.json()["error"]["details"] == [
        "unknown field 'site' in the body; the body holds only \"events\""]


def test_api_accepts_every_documented_field(server: Server, site: SiteInfo,
                                            data_dir: Path) -> None:
    event = {"name": "Settled", "event_id": "full-1", "timestamp": "2026-11-30T21:00:00Z",
             "url": "https://localhost/done", "value": 5, "currency": "NZD",
             "properties": {"plan": "pro"}, "visitor_id": "cookie-value-1",
             "user_data": {"email": "full@example.org"},
             "consent": {"analytics_storage": "granted", "ad_storage": "denied"},
             "utm_source": "crm", "gclid": "g-1", "campaign": "spring", "creative": "c1",
             "placement": "p1"}
    response = httpx.post(f"{server.base}/api/v1/events", json={"events": [event]},
                          headers={"Authorization": f"Bearer {site.api_key}"})

    assert response.json() == {"accepted": 1}
    wait_drained(data_dir)
    assert query(data_dir, "SELECT campaign, creative, placement, consent_analytics, "
                           "consent_ad_storage FROM events") == [
        ("spring", "c1", "p1", "granted", "denied")]


LONG_PAGE = "http://localhost/pricing?data=" + "d" * 2100 + "&utm_source=news#section"


def test_pixel_long_fields_shortened(server: Server, site: SiteInfo, data_dir: Path) -> None:
    referrer = "https://search.example/?q=" + "q" * 2100
    params = (f"s={site.id}&t={'T' * 600}&u={quote(LONG_PAGE, safe='')}"
              f"&r={quote(referrer, safe='')}")
    response = httpx.get(f"{server.base}/p.gif?{params}", headers={"User-Agent": BROWSER_UA})

    assert response.content == GIF
    assert _rejections(data_dir) == []
    rows = query(data_dir, "SELECT title, url, path, utm_source, referrer FROM events")
    assert rows == [("T" * 500, "http://localhost/pricing?utm_source=news", "/pricing", "news",
                     "https://search.example/")]


def test_beacon_long_fields_shortened(server: Server, site: SiteInfo, data_dir: Path) -> None:
    body = {"s": site.id, "events": [{"e": "page_view", "u": LONG_PAGE, "t": "T" * 600},
                                     {"e": "n" * 201, "u": "http://localhost/"}]}
    response = httpx.post(f"{server.base}/e", json=body, headers={"User-Agent": BROWSER_UA})

    assert response.status_code == 204
    rejected = _rejections(data_dir)
    assert [row[:2] for row in rejected] == [
        ("invalid_field", "events[1]: event name is longer than 200 characters")]
    assert query(data_dir, "SELECT title, url FROM events") == [
        ("T" * 500, "http://localhost/pricing?utm_source=news")]


GRANTED = {"analytics_storage": "granted", "ad_storage": "granted", "ad_user_data": "granted",
           "ad_personalization": "granted"}


def test_api_visitor_from_identity(server: Server, site: SiteInfo, data_dir: Path) -> None:
    beacon = {"s": site.id, "vid": "browser-cookie-1", "consent": GRANTED,
              "events": [{"e": "page_view", "u": "http://localhost/"}]}
    events = [
        {"name": "Linked", "event_id": "e1", "visitor_id": "browser-cookie-1",
         "consent": GRANTED},
        {"name": "Emailed", "event_id": "e2", "user_data": {"email": "one@example.org"},
         "consent": GRANTED},
        {"name": "Emailed", "event_id": "e3", "user_data": {"email": "One@Example.org"},
         "consent": GRANTED},
        {"name": "Clicked", "event_id": "e4", "gclid": "g-1", "consent": GRANTED},
        {"name": "Clicked", "event_id": "e5", "gclid": "g-1", "consent": GRANTED},
        {"name": "Anonymous", "event_id": "e6"},
        {"name": "Anonymous", "event_id": "e7", "consent": GRANTED},
        {"name": "Anonymous", "event_id": "e8", "visitor_id": "browser-cookie-1"},
        {"name": "Unlinked", "event_id": "e9", "user_data": {"email": "two@example.org"}},
        {"name": "Unlinked", "event_id": "e10", "user_data": {"email": "two@example.org"}},
    ]
    assert httpx.post(f"{server.base}/e", content=orjson.dumps(beacon),
                      headers={"User-Agent": BROWSER_UA}).status_code == 204
    response = httpx.post(f"{server.base}/api/v1/events", json={"events": events},
                          headers={"Authorization": f"Bearer {site.api_key}"})
    assert response.json() == {"accepted": len(events)}
    wait_drained(data_dir)

    visitor = dict(query(data_dir, "SELECT COALESCE(client_event_id, 'view'), visitor_id "
                                   "FROM events"))
    assert visitor["e1"] == visitor["view"]
    assert visitor["e2"] == visitor["e3"]
    assert visitor["e4"] == visitor["e5"]
    assert visitor["e6"] == visitor["e7"] == visitor["e8"] == ""
    # Without analytics consent contact details link nothing, so each such event is a visitor
    # of its own.
    assert visitor["e9"] != visitor["e10"]
    distinct = {visitor[key] for key in ("view", "e2", "e4", "e6", "e9", "e10")}
    assert len(distinct) == 6
    overview = {row["metric"]: row["value"] for row in json.loads(
        cli(data_dir, "report", "overview", "--site", site.id, "--format", "json").stdout)}
    assert overview["visitors"] == 6


def test_pixel_long_referer_header_shortened(server: Server, site: SiteInfo,
                                             data_dir: Path) -> None:
    page = "http://localhost/landing?ref=" + "r" * 3000 + "&utm_source=ads"
    response = httpx.get(f"{server.base}/p.gif?s=&s={site.id}",
                         headers={"User-Agent": BROWSER_UA, "Referer": page})

    assert response.content == GIF
    assert _rejections(data_dir) == []
    assert query(data_dir, "SELECT url, utm_source FROM events") == [
        ("http://localhost/landing?utm_source=ads", "ads")]
