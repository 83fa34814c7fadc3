"""``trackpixel serve`` as a process: restarts, processor supervision and health."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from server import Server, SiteInfo, cli, query, wait_drained
from web_fixtures import event, insert_events, make_site, open_data_dir

from trackpixel.processor_status import MAX_RECENT_RESTARTS, RESTART_WINDOW_S, ProcessorStatus


def _time_wait_connections() -> str:
    return subprocess.run(["ss", "-tan", "state", "time-wait"], capture_output=True,
                          text=True, check=True).stdout


def _request_server_closes(port: int) -> None:
    """Send one request with ``Connection: close`` and read to the end, so the server closes
    the connection first and its side keeps the port in TIME-WAIT."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        while conn.recv(65536):
            pass


def test_restart_after_kill_reuses_port(data_dir: Path, site: SiteInfo) -> None:
    first = Server(data_dir).start()
    for _ in range(3):
        _request_server_closes(first.port)
    first.kill9()
    assert f"127.0.0.1:{first.port} " in _time_wait_connections()

    second = Server(data_dir)
    second.port = first.port
    second.base = first.base
    second.log_path = data_dir / "server-restart.log"
    try:
        second.start()
        assert httpx.get(f"{second.base}/healthz").status_code == 200
    finally:
        second.stop()


PAGE = "http://localhost/retention"


def _pixel(server: Server, site: SiteInfo, hit_id: str) -> None:
    response = httpx.get(f"{server.base}/p.gif", params={"s": site.id, "u": PAGE, "id": hit_id},
                         headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"})
    assert response.status_code == 200


def _stored_ids(data_dir: Path) -> int:
    return len(query(data_dir, "SELECT id FROM events WHERE url = ?", (PAGE,)))


def test_retention_days_bounded(data_dir: Path, site: SiteInfo) -> None:
    result = cli(data_dir, "sites", "privacy", site.id, "--retention-days", "1000000",
                 check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: retention_days=1000000 is too long: the maximum is 36500 days (100 years)"]
    accepted = cli(data_dir, "sites", "privacy", site.id, "--retention-days", "36500")
    assert json.loads(accepted.stdout)["retention_days"] == 36500


def test_stored_huge_retention_keeps_processing(data_dir: Path, site: SiteInfo) -> None:
    # A value stored before the maximum existed.
    privacy = json.loads(query(data_dir, "SELECT privacy FROM sites WHERE id = ?",
                               (site.id,))[0][0])
    privacy["retention_days"] = 1_000_000
    conn = sqlite3.connect(data_dir / "trackpixel.db")
    with conn:
        conn.execute("UPDATE sites SET privacy = ? WHERE id = ?", (json.dumps(privacy), site.id))
    conn.close()

    server = Server(data_dir).start()
    try:
        _pixel(server, site, "after-start")
        wait_drained(data_dir)
        assert _stored_ids(data_dir) == 1
        health = httpx.get(f"{server.base}/healthz")
        assert health.status_code == 200
        assert health.json()["processor"]["restarts"] == 0
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_retention_failure_skips_one_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    from trackpixel.pipeline import maintenance
    from trackpixel.pipeline.maintenance import DAY_MS, Maintenance

    _, conn = open_data_dir(tmp_path / "data")
    broken = make_site(conn, "broken.example")
    healthy = make_site(conn, "healthy.example")
    now = int(time.time() * 1000)
    old = now - 500 * DAY_MS
    insert_events(conn, [event(site, old, visitor_id="v", session_id="s")
                         for site in (broken, healthy)])
    # Settings that bypass validation: the date math for this period overflows.
    unbounded = replace(broken, privacy=replace(broken.privacy, retention_days=1_000_000))
    monkeypatch.setattr(maintenance, "list_sites", lambda _conn: [unbounded, healthy])

    with caplog.at_level(logging.ERROR, logger="trackpixel.processor"):
        Maintenance(conn, lambda: []).run_due(now / 1000)

    remaining = conn.execute("SELECT site_id FROM events").fetchall()
    assert remaining == [(broken.id,)]
    assert f"retention failed for site {broken.id}" in caplog.text


def test_processor_restarted_after_kill(data_dir: Path, site: SiteInfo) -> None:
    server = Server(data_dir).start()
    try:
        first = httpx.get(f"{server.base}/healthz").json()["processor"]
        assert first["state"] == "running"
        os.kill(first["pid"], signal.SIGKILL)
        restarted = _wait_for_processor(server, lambda status: status["restarts"] == 1
                                        and status["state"] == "running")
        assert restarted["pid"] != first["pid"]

        health = httpx.get(f"{server.base}/healthz")
        assert health.status_code == 200
        _pixel(server, site, "after-restart")
        wait_drained(data_dir)
        assert _stored_ids(data_dir) == 1
        assert "processor (pid" in server.log()
        assert "exited unexpectedly with signal SIGKILL" in server.log()
    finally:
        server.stop()


def test_repeated_processor_restarts_unhealthy(data_dir: Path, site: SiteInfo) -> None:
    server = Server(data_dir).start()
    try:
        for restart in range(1, MAX_RECENT_RESTARTS + 1):
            pid = httpx.get(f"{server.base}/healthz").json()["processor"]["pid"]
            os.kill(pid, signal.SIGKILL)
            _wait_for_processor(server, lambda status, restart=restart:
                                status["restarts"] == restart and status["state"] == "running")
        health = httpx.get(f"{server.base}/healthz")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "degraded"
        assert f"processor restarted {MAX_RECENT_RESTARTS} times" in body["reason"]
    finally:
        server.stop()


def _wait_for_processor(server: Server, condition: Callable[[dict[str, Any]], bool],
                        timeout: float = 120.0) -> dict[str, Any]:
    """Poll ``/healthz`` until its processor status meets ``condition``."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = httpx.get(f"{server.base}/healthz").json().get("processor", {})
        if status and condition(status):
            return status
        time.sleep(0.1)
    raise AssertionError(f"processor status not reached: {status}\n{server.log()}")


def test_restarts_age_out_of_window() -> None:
    now = 1_800_000_000.0
    status = ProcessorStatus("running", 42, MAX_RECENT_RESTARTS,
                             [now - 30.0 * index for index in range(MAX_RECENT_RESTARTS)],
                             "signal SIGKILL")
    assert status.problem(now) is not None
    # Once the first restart is older than the window, the processor is healthy again
    # without a further restart or status write.
    later = now + RESTART_WINDOW_S - 30.0 * (MAX_RECENT_RESTARTS - 1) + 1.0
    assert status.recent_restarts(later) == MAX_RECENT_RESTARTS - 1
    assert status.problem(later) is None
