"""``trackpixel serve`` as a process: restarts, processor supervision and health."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx
from server import Server, SiteInfo


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
