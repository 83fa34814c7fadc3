"""Real ClickHouse servers for tests: each on free 127.0.0.1 ports with its own config and data.

Import the fixtures into a test module (``from clickhouse_fixtures import clickhouse``);
``tests/conftest.py`` puts the tests folder on ``sys.path``.
The server binary is Debian's ``clickhouse-server`` (18.16); when it is missing the fixture
installs it with apt-get, and skips the test only if that fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from trackpixel.reports import queries
from trackpixel.reports import run as reports

SERVER_BINARY_NAMES = ("clickhouse-server", "clickhouse")
START_TIMEOUT_S = 60.0

USERS_XML = """<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_server_binary() -> str | None:
    """Return the path of ``clickhouse-server``, installing the Debian package if it is missing."""
    for name in SERVER_BINARY_NAMES:
        for folder in ("/usr/sbin", "/usr/bin", "/usr/local/bin"):
            candidate = Path(folder) / name
            if candidate.exists():
                return str(candidate) if name == "clickhouse-server" else f"{candidate} server"
        found = shutil.which(name)
        if found:
            return found if name == "clickhouse-server" else f"{found} server"
    apt = shutil.which("apt-get")
    if apt is None:
        return None
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run([*prefix, apt, "install", "-y", "clickhouse-server"], check=True,
                       env=env, capture_output=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError):
        return None
    return shutil.which("clickhouse-server") or (
        "/usr/sbin/clickhouse-server" if Path("/usr/sbin/clickhouse-server").exists() else None)


@dataclass
class ClickHouseServer:
    """One ``clickhouse-server`` process with its config and data under ``root``."""

    root: Path
    binary: str
    tcp_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    interserver_port: int = field(default_factory=free_port)
    remote_servers: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"clickhouse://127.0.0.1:{self.tcp_port}/trackpixel"

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("data", "tmp", "format_schemas", "user_files"):
            (self.root / sub).mkdir(exist_ok=True)
        (self.root / "users.xml").write_text(USERS_XML)
        config = f"""<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{self.root}/server.log</log>
        <errorlog>{self.root}/server.err.log</errorlog>
        <size>10M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{self.http_port}</http_port>
    <tcp_port>{self.tcp_port}</tcp_port>
    <interserver_http_port>{self.interserver_port}</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>0</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <path>{self.root}/data/</path>
    <tmp_path>{self.root}/tmp/</tmp_path>
    <user_files_path>{self.root}/user_files/</user_files_path>
    <format_schema_path>{self.root}/format_schemas/</format_schema_path>
    <users_config>{self.root}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <remote_servers>{self.remote_servers}</remote_servers>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
"""
        path = self.root / "config.xml"
        path.write_text(config)
        return path

    def start(self) -> None:
        config = self.write_config()
        command = [*self.binary.split(), f"--config-file={config}"]
        log = open(self.root / "stdout.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(command, cwd=self.root, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"clickhouse-server exited with {self.process.returncode}; "
                                   f"see {self.root}/server.err.log")
            try:
                with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=0.5):
                    pass
                from clickhouse_driver import Client

                Client(host="127.0.0.1", port=self.tcp_port).execute("SELECT 1")
                return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError(f"clickhouse-server on port {self.tcp_port} did not start within "
                           f"{START_TIMEOUT_S} s; see {self.root}/server.err.log")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def client(self, database: str | None = "trackpixel"):  # type: ignore[no-untyped-def]
        from clickhouse_driver import Client

        return Client(host="127.0.0.1", port=self.tcp_port, database=database or "default")


def shard_config(servers: list[ClickHouseServer], cluster: str = "trackpixel_cluster") -> str:
    shards = "".join(
        f"<shard><replica><host>127.0.0.1</host><port>{server.tcp_port}</port></replica></shard>"
        for server in servers)
    return f"<{cluster}>{shards}</{cluster}>"


@pytest.fixture(scope="session")
def clickhouse_binary() -> str:
    pytest.importorskip("clickhouse_driver")
    binary = find_server_binary()
    if binary is None:
        pytest.skip("clickhouse-server is not installed and apt-get install failed")
    return binary


@pytest.fixture(scope="module")
def clickhouse(clickhouse_binary: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    """One ClickHouse server for the test module."""
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse"), clickhouse_binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def clickhouse_shards(clickhouse_binary: str,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[
                          list[ClickHouseServer]]:
    """Two ClickHouse servers that both know the two-shard cluster ``trackpixel_cluster``."""
    servers = [ClickHouseServer(tmp_path_factory.mktemp(f"clickhouse-shard{index}"),
                                clickhouse_binary) for index in range(2)]
    remote = shard_config(servers)
    for server in servers:
        server.remote_servers = remote
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


# Generated events shared by the backend comparison tests.

SITE_ZONE = "Pacific/Auckland"
GENERATED_DAYS = ("2026-03-01", "2026-03-02", "2026-03-03", "2026-03-30", "2026-03-31",
                  "2026-04-01")
FUNNEL_STEPS = ["signup_started", "signup_done", "purchase"]


def generated_batches(site_id: str, count: int = 3000, seed: int = 7,
                      spool: str = "generated") -> list:  # type: ignore[type-arg]
    """Return ``ProcessedBatch`` objects with events covering every report's columns.

    The data has NULLs in optional columns, bots, machine opens, float values, repeated
    client event ids (later copies become duplicate rejections), rejected hits and
    funnel steps in and out of order, spread over days in two months. As in the pipeline,
    at most one event of a session starts it.
    """
    import random
    from datetime import date, datetime
    from zoneinfo import ZoneInfo

    from trackpixel.storage.records import EventRow, ProcessedBatch, RejectedRow

    rng = random.Random(seed)
    zone = ZoneInfo(SITE_ZONE)
    kinds = ["page_view"] * 6 + ["custom", "click", "email_open", "impression"]
    channels = ["direct", "organic_search", "email", "paid_search", "referral"]
    batches = []
    events: list[EventRow] = []
    rejected: list[RejectedRow] = []
    started: set[str] = set()
    for index in range(count):
        day = rng.choice(GENERATED_DAYS)
        base = datetime.combine(date.fromisoformat(day), datetime.min.time(), zone)
        ts = int(base.timestamp() * 1000) + rng.randrange(86_400_000)
        local = datetime.fromtimestamp(ts / 1000, zone)
        kind = rng.choice(kinds)
        name = kind
        client_id = None
        value = None
        if kind == "custom":
            name = rng.choice([*FUNNEL_STEPS, "newsletter"])
            value = round(rng.uniform(1, 200), 2) if rng.random() < 0.5 else None
            if rng.random() < 0.4:
                client_id = f"order-{rng.randrange(60)}"
        visitor = f"v{rng.randrange(150):04d}"
        path = rng.choice(["/", "/pricing", "/blog/a", "/blog/b", None])
        campaign = rng.choice([None, None, "spring", "newsletter-3", "retarget"])
        session = f"{visitor}-s{rng.randrange(3)}"
        start = rng.random() < 0.3 and session not in started
        if start:
            started.add(session)
        events.append(EventRow(
            event_uid=f"{spool}:{index}:0", site_id=site_id, ts=ts,
            local_day=local.date().isoformat(), local_hour=local.hour,
            source=rng.choice(["pixel", "beacon", "api", "open", "click"]), kind=kind, name=name,
            client_event_id=client_id,
            url=f"https://example.com{path}" if path else None, host="example.com",
            path=path, title=rng.choice([None, "Home", "Pricing"]),
            referrer=None, referrer_host=rng.choice([None, "google.com", "news.ycombinator.com"]),
            channel=rng.choice(channels),
            utm_source=rng.choice([None, "google", "newsletter"]),
            utm_medium=rng.choice([None, "cpc", "email"]), utm_campaign=campaign,
            utm_term=None, utm_content=None, click_id_type=None, click_id=None,
            campaign=campaign, creative=None, placement=None,
            recipient=rng.choice([None, "r1", "r2", "r3"]), value=value,
            currency="EUR" if value else None, props=None,
            visitor_id=visitor, session_id=session, session_start=int(start),
            browser=rng.choice(["Chrome", "Firefox", None]), browser_version=None,
            os=rng.choice(["Linux", "iOS", None]), os_version=None,
            device_type=rng.choice(["desktop", "mobile", None]),
            is_bot=int(rng.random() < 0.05), bot_reason=None,
            machine_open=int(kind == "email_open" and rng.random() < 0.3), ip_anon=None,
            country=rng.choice([None, "NZ", "DE"]), consent_analytics=None,
            consent_ad_storage=None, consent_ad_user_data=None,
            consent_ad_personalization=None, gpc=0, dnt=0, cookieless=0, user_data=None,
        ))
        if rng.random() < 0.03:
            rejected.append(RejectedRow(
                hit_uid=f"{spool}:{index}:r0", received_ts=ts, source="pixel",
                site_id=rng.choice([site_id, None]),
                reason=rng.choice(["unknown_site", "invalid_field", "too_large"]),
                detail="generated", raw=b"s=x", user_agent=None))
        if len(events) >= 500 or index == count - 1:
            batches.append(ProcessedBatch(spool=spool, last_rowid=index + 1, events=events,
                                          rejected=rejected, sessions=[]))
            events, rejected = [], []
    return batches


def dashboard_reports(store: Any, site: Any, query: Any) -> dict[str, Any]:
    """Every runner behind the dashboard views and the report API, by name."""
    funnel = [reports.FunnelStep("event", step) for step in FUNNEL_STEPS]
    goal = FUNNEL_STEPS[-1]
    runners = {
        "dashboard_overview": lambda: reports.dashboard_overview(store, site, query),
        "dashboard_overview_goal": lambda: reports.dashboard_overview(store, site, query,
                                                                      goal=goal),
        "hourly": lambda: reports.timeseries(store, site, query, interval="hour"),
        "daily": lambda: reports.timeseries(store, site, query, interval="day"),
        "weekly": lambda: reports.timeseries(store, site, query, interval="week", goal=goal),
        "top_pages": lambda: reports.top_pages(store, site, query),
        "entry_pages": lambda: reports.entry_pages(store, site, query),
        "exit_pages": lambda: reports.exit_pages(store, site, query),
        "channels": lambda: reports.channels(store, site, query, goal=goal),
        "referrers": lambda: reports.referrers(store, site, query),
        "utm_campaigns": lambda: reports.utm_campaigns(store, site, query),
        "custom_events": lambda: reports.custom_events(store, site, query),
        "event_properties": lambda: reports.event_properties(store, site, query),
        "email_campaigns": lambda: reports.email_campaigns(store, site, query),
        "ad_campaigns": lambda: reports.ad_campaigns(store, site, query, goal=goal),
        "funnel_steps": lambda: reports.funnel_steps(store, site, query, steps=funnel,
                                                     window_seconds=2 * 86_400),
        "rejected_hits": lambda: reports.rejected_hits(store, site, query),
        "rejected_hits_unattributed": lambda: reports.rejected_hits(store, site, query,
                                                                    unattributed=True),
        "bot_traffic": lambda: reports.bot_traffic(store, site, query),
        "machine_opens": lambda: reports.machine_opens(store, site, query),
    }
    for dimension in queries.BREAKDOWN_COLUMNS:
        runners[f"breakdown_{dimension}"] = (
            lambda dimension=dimension: reports.breakdown(store, site, query,
                                                          dimension=dimension))
    return runners


DASHBOARD_NAMES = sorted(dashboard_reports(None, None, None))
