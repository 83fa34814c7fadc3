"""What every dashboard and API handler shares: the database, templates, the signed-in user,
site access and the JSON error shape."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import JSONResponse

from trackpixel.identity import Network
from trackpixel.sites import Site, list_sites
from trackpixel.storage.sqlite import connect
from trackpixel.web import auth


@dataclass(frozen=True)
class WebConfig:
    db_path: Path
    templates: Environment
    # The event store reports read: "sqlite" (the database at db_path) or a ClickHouse URL.
    store_url: str = "sqlite"
    # Proxies whose X-Forwarded-For is believed, as in the collector's settings.
    trusted_proxies: tuple[Network, ...] = ()


def make_templates() -> Environment:
    return Environment(loader=PackageLoader("trackpixel.web", "templates"),
                       autoescape=select_autoescape(default=True, default_for_string=True),
                       trim_blocks=True, lstrip_blocks=True)


def config(request: Request) -> WebConfig:
    value: WebConfig = request.app.state.web
    return value


@contextmanager
def database(request: Request) -> Iterator[sqlite3.Connection]:
    """Open a read-write connection to the data directory's database for one request."""
    conn = connect(config(request).db_path)
    try:
        yield conn
    finally:
        conn.close()


def json_error(status: int, code: str, message: str,
               details: dict[str, Any] | None = None) -> JSONResponse:
    """Return the API's one error shape: ``{"error": {"code", "message", "details"?}}``."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status,
                        headers={"Cache-Control": "no-store"})


def session_for(request: Request, conn: sqlite3.Connection) -> auth.WebSession | None:
    cookie = request.cookies.get(auth.SESSION_COOKIE)
    return auth.load_session(conn, cookie) if cookie else None


def visible_sites(conn: sqlite3.Connection, user: auth.User) -> list[Site]:
    return [site for site in list_sites(conn) if user.can_see(site.id)]


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"
