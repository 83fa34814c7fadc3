"""The collector's spool limit: at ``max_spool_rows`` the collector still responds to every
hit, and the overflow is recorded as ``spool_full`` rejections."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx
from server import Server, SiteInfo, cli

from trackpixel.storage.sqlite import SqliteStore

PAGE = quote("http://localhost/load", safe="")
UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/131.0.0.0 Safari/537.36")


def test_spool_limit_records_overflow(data_dir: Path, site: SiteInfo) -> None:
    (data_dir / "config.toml").write_text("max_spool_rows = 40\n")
    server = Server(data_dir, workers=1, extra=("--no-processor",)).start()
    try:
        with httpx.Client(timeout=5) as client:
            statuses = [client.get(f"{server.base}/p.gif?s={site.id}&u={PAGE}&e=Load&id=n{n}",
                                   headers={"User-Agent": UA}).status_code
                        for n in range(100)]
    finally:
        server.stop()
    assert statuses == [200] * 100
    assert "is full (40 unprocessed rows)" in server.log()
    cli(data_dir, "process", "--once")
    state = SqliteStore(data_dir / "trackpixel.db")
    events = state.query("SELECT COUNT(*) FROM events WHERE name = 'Load'", {})
    overflow = state.query("SELECT COUNT(*) FROM rejected_hits WHERE reason = 'spool_full'", {})
    state.close()
    assert events == [(40,)]
    assert overflow == [(60,)]

