"""The dashboard and report API, an ASGI app the collector delegates its web paths to."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from trackpixel.config import DataDir
from trackpixel.sites import get_site
from trackpixel.storage import columns
from trackpixel.storage.backends import SQLITE_URL, STORE_ENV, resolve_store_url
from trackpixel.storage.sqlite import connect, migrate
from trackpixel.web import api, openapi, views
from trackpixel.web.context import WebConfig, json_error, make_templates
from trackpixel.web.proxy import ProxyHeaders, allow_ips_from_env

STATIC_DIR = Path(__file__).parent / "static"


def create_web_app(data_dir: DataDir) -> Starlette:
    """Build the app for ``data_dir``; the database is migrated first."""
    conn = connect(data_dir.db_path)
    try:
        migrate(conn)
    finally:
        conn.close()
    routes = [
        Route("/dashboard", views.index),
        Route("/dashboard/", views.index),
        Route("/dashboard/login", views.login_page, methods=["GET"]),
        Route("/dashboard/login", views.login_submit, methods=["POST"]),
        Route("/dashboard/logout", views.logout, methods=["POST"]),
        Route("/dashboard/tokens", views.tokens, methods=["GET", "POST"]),
        Route("/dashboard/{view}", views.view, methods=["GET"]),
        Route("/api/v1/reports", api.report_index, methods=["GET"]),
        Route("/api/v1/reports/{report}", api.report, methods=["GET"]),
        Route("/api/v1/openapi.json", openapi.openapi_json, methods=["GET"]),
        Mount("/static/dashboard", StaticFiles(directory=STATIC_DIR), name="static"),
        Route("/{path:path}", api.not_found),
    ]
    settings = data_dir.settings()
    # The scheme and host headers are read from the --forwarded-allow-ips addresses (default
    # 127.0.0.1) and from the proxies in trusted_proxies (config.toml).
    allowed = allow_ips_from_env()
    trusted = None if allowed is None else (*allowed, *settings.trusted_proxies)
    app = Starlette(routes=routes, middleware=[Middleware(ProxyHeaders, trusted=trusted)],
                    exception_handlers={HTTPException: _http_error})
    # `trackpixel serve` passes its --store to the workers in the environment.
    store_url = resolve_store_url(data_dir, os.environ.get(STORE_ENV))
    app.state.web = WebConfig(db_path=data_dir.db_path, templates=make_templates(),
                              store_url=store_url, trusted_proxies=settings.trusted_proxies)
    if store_url == SQLITE_URL and os.environ.get(WARM_ENV, "1") != "0":
        threading.Thread(target=_warm_column_cache, args=(data_dir.db_path,),
                         name="column-cache-warm-up", daemon=True).start()
    return app


def _http_error(request: Request, exc: Exception) -> Response:
    """Return routing errors (such as 405) under /api/ in the API's JSON error shape."""
    assert isinstance(exc, HTTPException)
    if not request.url.path.startswith("/api/"):
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    if exc.status_code == 405:
        # Starlette builds the Allow header from a set, so its order varies.
        allowed = ", ".join(sorted((exc.headers or {}).get("Allow", "GET").split(", ")))
        response = json_error(405, "method_not_allowed", f"method {request.method} is not "
                              f"allowed on {request.url.path}: use {allowed}")
    else:
        response = json_error(exc.status_code, "http_error", f"{request.url.path}: {exc.detail}")
    response.headers.update(exc.headers or {})
    return response


# Set to 0 to leave the column cache empty until the first filtered view.
WARM_ENV = "TRACKPIXEL_WARM_COLUMN_CACHE"
log = logging.getLogger("trackpixel.web")


def _warm_column_cache(db_path: Path) -> None:
    """Read the recent column chunks into this process's cache; a failure only logs."""
    started = time.monotonic()
    conn = connect(db_path, readonly=True)
    try:
        cached = columns.warm_cache(conn, lambda site_id: _site_today(conn, site_id))
    except Exception:
        log.exception("warming the column cache from %s failed", db_path)
        return
    finally:
        conn.close()
    log.info("column cache warmed: %d chunks in %.1f s", cached, time.monotonic() - started)


def _site_today(conn: sqlite3.Connection, site_id: str) -> str:
    return datetime.now(get_site(conn, site_id).zone).date().isoformat()
