"""Run the real ``trackpixel`` server and CLI as subprocesses for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``trackpixel ARGS`` against ``data_dir`` and return the finished process."""
    env = {**os.environ, "TRACKPIXEL_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "trackpixel", *args], env=env,
                            capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"trackpixel {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@dataclass
class SiteInfo:
    id: str
    api_key: str
    domain: str


def add_site(data_dir: Path, domain: str = "localhost", *extra: str) -> SiteInfo:
    result = cli(data_dir, "sites", "add", domain, "--format", "json", *extra)
    record = json.loads(result.stdout)
    return SiteInfo(record["id"], record["api_key"], record["domain"])


class Server:
    """``trackpixel serve`` on a free loopback port, with its log in the data directory."""

    def __init__(self, data_dir: Path, *, workers: int = 1, extra: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    def start(self) -> Server:
        env = {**os.environ, "TRACKPIXEL_DATA_DIR": str(self.data_dir)}
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "trackpixel", "serve", "--port", str(self.port),
             "--workers", str(self.workers), *self.extra],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server did not become healthy:\n{self.log()}")

    def stop(self) -> None:
        """Stop gracefully: SIGINT to the whole process group, as Ctrl-C would."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def kill9(self) -> None:
        """Kill every process of the server at once with SIGKILL."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_drained(data_dir: Path, timeout: float = 60.0) -> None:
    """Wait until the processor has stored every row of every spool in the data directory."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _pending_rows(data_dir) == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"spools not drained after {timeout} s: {_pending_rows(data_dir)} rows")


def _pending_rows(data_dir: Path) -> int:
    pending = 0
    main = sqlite3.connect(data_dir / "trackpixel.db", timeout=30)
    try:
        cursors = dict(main.execute("SELECT spool, last_rowid FROM spool_cursors").fetchall())
    finally:
        main.close()
    for path in (data_dir / "spool").glob("*.db"):
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        except sqlite3.OperationalError:
            # Opening a spool read-only fails at times while a restarted collector opens it,
            # so the spool counts as not drained until the next check.
            pending += 1
            continue
        try:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'hits'").fetchone()
        except sqlite3.OperationalError:
            row = None
        finally:
            conn.close()
        top = row[0] if row else 0
        pending += max(0, top - cursors.get(path.stem, 0))
    return pending


def query(data_dir: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(data_dir / "trackpixel.db", timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
