"""Tracked links: destination checks in ``trackpixel link`` and in the click redirect."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from server import Server, SiteInfo, cli, query, wait_drained

from trackpixel import tokens
from trackpixel.config import DataDir

INVALID_DESTINATIONS = [
    ("https://example.com/\r\nSet-Cookie: x=1", "contains a control character"),
    ("https://example.com/\tpage", "contains a control character"),
    ("https://exa mple.com/", "has an invalid host 'exa mple.com'"),
    ("https:///path", "has no host"),
    ("https://user:secret@example.com/", "must not contain a user name or password"),
    ("https://example.com:99999/", "has an invalid port"),
    ("ftp://example.com/", "must start with http:// or https://"),
]


@pytest.mark.parametrize(("destination", "message"), INVALID_DESTINATIONS)
def test_link_rejects_invalid_destination(data_dir: Path, site: SiteInfo, destination: str,
                                          message: str) -> None:
    result = cli(data_dir, "link", destination, "--site", site.id, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: destination ")
    assert message in lines[0]


def test_link_normalizes_destination(server: Server, site: SiteInfo, data_dir: Path) -> None:
    url = cli(data_dir, "link", "https://Exämple.com/ä b?q=ü", "--site", site.id,
              "--collector", server.base).stdout.strip()

    response = httpx.get(url)

    assert response.status_code == 302
    assert response.headers["location"] == "https://xn--exmple-cua.com/%C3%A4%20b?q=%C3%BC"
    wait_drained(data_dir)
    assert query(data_dir, "SELECT name, url FROM events") == [
        ("click", "https://xn--exmple-cua.com/%C3%A4%20b?q=%C3%BC")]


def _signed_click(data_dir: Path, site: SiteInfo, destination: str) -> str:
    """Sign a click token the way links were made before destinations were checked."""
    return tokens.sign(DataDir(data_dir).secret(), "click", {"s": site.id, "d": destination})


def test_click_stored_invalid_destination(server: Server, site: SiteInfo,
                                          data_dir: Path) -> None:
    token = _signed_click(data_dir, site, "https://example.com/\r\nSet-Cookie: x=1")

    response = httpx.get(f"{server.base}/c/{token}")

    assert response.status_code == 400
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers
    assert "points to an invalid address" in response.text
    wait_drained(data_dir)
    assert query(data_dir, "SELECT COUNT(*) FROM events") == [(0,)]
    rejections = query(data_dir, "SELECT reason, detail FROM rejected_hits")
    assert len(rejections) == 1
    assert rejections[0][0] == "invalid_field"
    assert "contains a control character" in str(rejections[0][1])


def test_click_stored_raw_destination(server: Server, site: SiteInfo, data_dir: Path) -> None:
    token = _signed_click(data_dir, site, "https://example.com/ä b")

    response = httpx.get(f"{server.base}/c/{token}")

    assert response.status_code == 302
    assert response.headers["location"] == "https://example.com/%C3%A4%20b"


def test_click_keeps_browser_query_characters(server: Server, site: SiteInfo,
                                              data_dir: Path) -> None:
    url = cli(data_dir, "link", "https://example.com/a|b?utm_source=news&ids=[1]|{2}&q=it's",
              "--site", site.id, "--collector", server.base).stdout.strip()

    response = httpx.get(url)

    assert response.status_code == 302
    assert response.headers["location"] == \
        "https://example.com/a|b?utm_source=news&ids=[1]|{2}&q=it%27s"
