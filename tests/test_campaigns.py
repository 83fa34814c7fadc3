"""Ad impressions, tracked links and email campaigns through the real server."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx
from server import Server, SiteInfo, cli, query, wait_drained

UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
      "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1")
GMAIL_PROXY = ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
               "(via ggpht.com GoogleImageProxy)")


def test_impression_pixel_fields(server: Server, site: SiteInfo, data_dir: Path) -> None:
    response = httpx.get(
        f"{server.base}/p.gif?s={site.id}&e=impression&cmp=spring&crv=banner-a&plc=news-top"
        "&cb=839201", headers={"User-Agent": UA})
    wait_drained(data_dir)

    assert response.status_code == 200
    assert query(data_dir, "SELECT kind, campaign, creative, placement, session_start, "
                           "device_type FROM events") == [
        ("impression", "spring", "banner-a", "news-top", 0, "mobile")]


def test_impression_on_publisher_page(server: Server, site: SiteInfo, data_dir: Path) -> None:
    """An impression pixel in a creative on another site's page sends that page as Referer."""
    publisher = "https://news.example.org/business/rates-rise"
    httpx.get(f"{server.base}/p.gif?s={site.id}&e=impression&cmp=spring&crv=banner-a"
              f"&plc=news-top&cb=1", headers={"User-Agent": UA, "Referer": publisher})
    # A page view from the same page is still not the site's own.
    httpx.get(f"{server.base}/p.gif?s={site.id}", headers={"User-Agent": UA,
                                                           "Referer": publisher})
    wait_drained(data_dir)

    assert query(data_dir, "SELECT kind, host, campaign, placement FROM events") == [
        ("impression", "news.example.org", "spring", "news-top")]
    assert query(data_dir, "SELECT reason FROM rejected_hits") == [("domain_not_allowed",)]


def test_impression_unreplaced_macro(server: Server, site: SiteInfo, data_dir: Path) -> None:
    httpx.get(f"{server.base}/p.gif?s={site.id}&e=impression&cmp=%%CAMPAIGN%%&cb=1",
              headers={"User-Agent": UA})
    wait_drained(data_dir)

    rejected = query(data_dir, "SELECT reason, detail FROM rejected_hits")
    assert [row[0] for row in rejected] == ["invalid_utf8"]
    assert rejected[0][1].endswith(
        "; the query contains %%, as an ad server macro such as %%CAMPAIGN%% does when "
        "the ad server did not replace it")


def test_click_redirect_keeps_query(server: Server, site: SiteInfo, data_dir: Path) -> None:
    destination = ("https://example.com/rates?utm_source=newsletter&utm_medium=email"
                   "&utm_campaign=spring&gclid=Cj0KCQ-Abc_1")
    url = cli(data_dir, "link", destination, "--site", site.id, "--campaign", "spring",
              "--creative", "hero", "--recipient", "sub-9", "--collector",
              server.base).stdout.strip()

    response = httpx.get(url, headers={"User-Agent": UA}, follow_redirects=False)
    wait_drained(data_dir)

    assert response.status_code == 302
    assert response.headers["location"] == destination
    rows = query(data_dir, "SELECT kind, campaign, creative, channel, utm_source, "
                           "click_id_type, click_id FROM events")
    assert rows == [("click", "spring", "hero", "paid_search", "newsletter", "gclid",
                     "Cj0KCQ-Abc_1")]


def test_campaign_report_counts(server: Server, site: SiteInfo, data_dir: Path) -> None:
    for number in range(4):
        httpx.get(f"{server.base}/p.gif?s={site.id}&e=impression&cmp=autumn&cb={number}",
                  headers={"User-Agent": UA})
    link = cli(data_dir, "link", "https://example.com/", "--site", site.id, "--campaign",
               "autumn", "--channel", "display", "--collector", server.base).stdout.strip()
    httpx.get(link, headers={"User-Agent": UA})
    wait_drained(data_dir)

    rows = json.loads(cli(data_dir, "report", "ads", "--site", site.id, "--format",
                          "json").stdout)
    autumn = [row for row in rows if row["campaign"] == "autumn"]
    assert sum(row["impressions"] for row in autumn) == 4
    assert sum(row["clicks"] for row in autumn) == 1


def test_machine_opens_kept_apart(server: Server, site: SiteInfo, data_dir: Path) -> None:
    (data_dir / "config.toml").write_text("")
    cli(data_dir, "sites", "privacy", site.id, "--default", "analytics_storage=granted",
        "--region", "EEA:analytics_storage=granted", "--region", "GB:analytics_storage=granted",
        "--region", "CH:analytics_storage=granted")
    pixels = {}
    for recipient in ("r1", "r2"):
        tag = cli(data_dir, "email-pixel", "--site", site.id, "--campaign", "weekly",
                  "--recipient", recipient, "--collector", server.base).stdout
        pixels[recipient] = tag.split('src="')[1].split('"')[0]
    httpx.get(pixels["r1"], headers={"User-Agent": UA})
    httpx.get(pixels["r1"], headers={"User-Agent": UA})
    httpx.get(pixels["r2"], headers={"User-Agent": GMAIL_PROXY})
    httpx.get(pixels["r2"], headers={"User-Agent": "Mozilla/5.0"})
    wait_drained(data_dir)

    report = json.loads(cli(data_dir, "report", "email", "--site", site.id, "--format",
                            "json").stdout)
    assert report == [{"campaign": "weekly", "opens": 4, "unique_human_opens": 1,
                       "machine_opens": 2, "clicks": 0, "unique_clicks": 0,
                       "click_to_open_pct": 0.0}]
    reasons = query(data_dir, "SELECT bot_reason FROM events WHERE machine_open = 1 "
                              "ORDER BY bot_reason")
    assert reasons == [("apple_mail_privacy",), ("gmail_image_proxy",)]


def test_recipients_file_with_byte_order_mark(data_dir: Path, site: SiteInfo) -> None:
    """A CSV saved by a spreadsheet program starts with a UTF-8 byte order mark, which is not
    part of the first recipient id."""
    recipients = data_dir / "subscribers.csv"
    recipients.write_bytes("\ufeffsub-1001,jane\r\nsub-1002,joe\r\n".encode())

    output = cli(data_dir, "email-pixel", "--site", site.id, "--campaign", "weekly",
                 "--recipients", str(recipients), "--collector", "https://t.example.com").stdout
    single = cli(data_dir, "email-pixel", "--site", site.id, "--campaign", "weekly",
                 "--recipient", "sub-1001", "--collector", "https://t.example.com").stdout

    rows = list(csv.reader(io.StringIO(output)))
    assert rows[0] == ["recipient", "pixel_url"]
    assert [row[0] for row in rows[1:]] == ["sub-1001", "sub-1002"]
    assert rows[1][1] == single.split('src="')[1].split('"')[0]


def test_recipients_file_not_utf8(data_dir: Path, site: SiteInfo) -> None:
    recipients = data_dir / "subscribers.txt"
    recipients.write_bytes("sub-caf\u00e9\n".encode("latin-1"))

    result = cli(data_dir, "email-pixel", "--site", site.id, "--campaign", "weekly",
                 "--recipients", str(recipients), check=False)

    assert result.returncode == 1
    assert result.stderr == (f"Error: cannot read {recipients}: byte 7 is not UTF-8; save the "
                             "file as UTF-8 text\n")
