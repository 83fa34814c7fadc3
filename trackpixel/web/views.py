"""Dashboard pages: login, logout, report views and API tokens.

Report views are GET requests whose whole state (site, range, filters, funnel steps) is in
the URL, so a view can be bookmarked and shared. Forms that change state are POSTs with a
CSRF token.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from trackpixel.identity import client_ip
from trackpixel.reports.run import Table, previous_period
from trackpixel.web import auth, csrf
from trackpixel.web.api import resolve_site
from trackpixel.web.context import config, database, is_https, session_for, visible_sites
from trackpixel.web.reports import FILTER_PARAMS, ParamError, parse_request, run_report

log = logging.getLogger("trackpixel.web")

VIEWS: dict[str, tuple[str, list[str]]] = {
    "overview": ("Overview", ["overview", "timeseries", "channels", "pages"]),
    "pages": ("Pages", ["pages", "entry_pages", "exit_pages"]),
    "sources": ("Sources", ["channels", "referrers", "utm"]),
    "technology": ("Devices", ["devices", "browsers", "os"]),
    "countries": ("Countries", ["countries"]),
    "events": ("Events", ["events", "event_properties"]),
    "email": ("Email", ["email"]),
    "ads": ("Ads", ["ads"]),
    "funnel": ("Funnel", ["funnel"]),
    "quality": ("Data quality", ["rejected", "bots", "machine_opens"]),
}
# Table column -> URL filter parameter, so a cell links to the view filtered by its value.
COLUMN_FILTERS = {column: param for param, column in FILTER_PARAMS.items()} | {
    "referrer_host": "referrer", "name": "event"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = config(request).templates.get_template(template).render(request=request, **values)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _safe_next(value: str | None) -> str:
    # Only dashboard paths, so the login form cannot redirect to another site. The query
    # string may contain "//" (a shared view filtered by a URL, say).
    target = value or ""
    path = target.partition("?")[0]
    if path.startswith("/dashboard") and "//" not in path and "\\" not in path:
        return target
    return "/dashboard/overview"


def _client_address(request: Request) -> str:
    """Return the client address, read through the trusted proxies as the collector does."""
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.get("x-forwarded-for"),
                     config(request).trusted_proxies) or "unknown"


# Login and logout

def login_page(request: Request) -> Response:
    token = request.cookies.get(csrf.LOGIN_COOKIE) or csrf.new_login_token()
    response = render(request, "login.html", csrf_token=token,
                      next=_safe_next(request.query_params.get("next")), error=None)
    response.set_cookie(csrf.LOGIN_COOKIE, token, httponly=True, samesite="lax",
                        secure=is_https(request), path="/dashboard")
    return response


async def login_submit(request: Request) -> Response:
    form = await request.form()
    email = str(form.get("email", ""))
    password = str(form.get("password", ""))
    next_path = _safe_next(str(form.get("next", "")))
    token = request.cookies.get(csrf.LOGIN_COOKIE)
    try:
        csrf.check_origin(request)
        csrf.check_token(form.get(csrf.FIELD), token)
    except csrf.CsrfError as exc:
        return render(request, "error.html", 403, message=str(exc))
    address = _client_address(request)
    with database(request) as conn:
        if auth.is_throttled(conn, email, address):
            log.warning("login throttled for one email and network")
            return render(request, "login.html", 429, csrf_token=token, next=next_path,
                          error="Too many failed logins. Wait 15 minutes and try again.")
        user = auth.verify_password(conn, email, password)
        if user is None:
            auth.record_failure(conn, email, address)
            return render(request, "login.html", 401, csrf_token=token, next=next_path,
                          error="Wrong email or password.")
        auth.clear_failures(conn, email, address)
        cookie = auth.start_session(conn, user)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(auth.SESSION_COOKIE, cookie, max_age=auth.SESSION_TTL_MS // 1000,
                        httponly=True, samesite="lax", secure=is_https(request), path="/")
    return response


async def logout(request: Request) -> Response:
    form = await request.form()
    with database(request) as conn:
        session = session_for(request, conn)
        if session is not None:
            try:
                csrf.check_origin(request)
                csrf.check_token(form.get(csrf.FIELD), session.csrf_token)
            except csrf.CsrfError as exc:
                return render(request, "error.html", 403, message=str(exc))
            auth.end_session(conn, request.cookies[auth.SESSION_COOKIE])
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


def _login_redirect(request: Request) -> Response:
    target = urlencode({"next": str(request.url.path) + (
        f"?{request.url.query}" if request.url.query else "")})
    return RedirectResponse(f"/dashboard/login?{target}", status_code=303)


# Report views

def _url_with(request: Request, **changes: str | None) -> str:
    """Return the current URL with parameters replaced (None removes one)."""
    pairs = [(key, value) for key, value in request.query_params.multi_items()
             if key not in changes]
    pairs += [(key, value) for key, value in changes.items() if value is not None]
    return f"{request.url.path}?{urlencode(pairs)}"


def _series(settings: Any, site: Any, parsed: Any, table: Table) -> dict[str, Any]:
    """Return the chart data of a time series: its labels, visitors and page views, and the
    visitors of the previous period of equal length, bucket by bucket."""
    series: dict[str, Any] = {"labels": [row[0] for row in table.rows],
                              "visitors": [row[1] for row in table.rows],
                              "page_views": [row[3] for row in table.rows]}
    earlier = replace(parsed, query=previous_period(parsed.query))
    try:
        previous = run_report(settings.db_path, "timeseries", site, earlier, settings.store_url)
    except (ValueError, RuntimeError) as exc:
        log.warning("previous period series for site %s failed: %s", site.id, exc)
        return series
    # The two periods have as many days; a weekly series can have one bucket more or less.
    visitors = [row[1] for row in previous.rows][:len(table.rows)]
    series["previous_visitors"] = visitors + [None] * (len(table.rows) - len(visitors))
    series["previous_labels"] = [row[0] for row in previous.rows][:len(table.rows)]
    return series


def cell_link(value: Any) -> str | None:
    """Return ``value`` when it is an http or https URL that may become a link, else None."""
    if isinstance(value, str) and value.lower().startswith(("http://", "https://")):
        return value
    return None


def index(request: Request) -> Response:
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"/dashboard/overview{query}", status_code=303)


def view(request: Request) -> Response:
    name = request.path_params["view"]
    if name not in VIEWS:
        return render(request, "error.html", 404, message=f"no dashboard view named {name!r}")
    with database(request) as conn:
        session = session_for(request, conn)
        if session is None:
            return _login_redirect(request)
        sites = visible_sites(conn, session.user)
        site = resolve_site(conn, session.user, request.query_params.get("site"))
    if isinstance(site, Response) and not sites:
        message = ("No site exists yet: add one with 'trackpixel sites add DOMAIN'."
                   if session.user.is_admin else
                   "No site is granted to this user. Ask an admin for access.")
        return render(request, "error.html", 403, message=message)
    if isinstance(site, Response):
        return render(request, "error.html", 404,
                      message="That site does not exist or you may not see it.")
    title, report_names = VIEWS[name]
    tables: list[tuple[str, Table | None, str | None]] = []
    error = None
    try:
        parsed = replace(parse_request(site, request.query_params,
                                       request.query_params.getlist("step")),
                         unattributed=session.user.is_admin)
    except ParamError as exc:
        return render(request, "error.html", 400, message=str(exc))
    series = None
    for report in report_names:
        if report == "funnel" and len(parsed.steps) < 2:
            tables.append((report, None, None))
            continue
        try:
            settings = config(request)
            table = run_report(settings.db_path, report, site, parsed, settings.store_url)
        except (ValueError, RuntimeError) as exc:
            error = str(exc)
            continue
        if report == "timeseries":
            series = _series(settings, site, parsed, table)
        # The range is pinned, so the CSV contains the table shown even when "today" has moved
        # on in the site's time zone before the link is followed.
        csv_query = _url_with(request, site=site.id, format="csv",
                              **{"from": parsed.query.from_day, "to": parsed.query.to_day})
        csv_url = "/api/v1/reports/" + report + csv_query[len(request.url.path):]
        tables.append((report, table, csv_url))
    active_filters = [(param, value, _url_with(request, **{param: None}))
                      for param, value in parsed.filters.items()]
    steps = [step.label() for step in parsed.steps] or ["", ""]
    return render(request, "view.html", view=name, title=title, views=VIEWS, sites=sites,
                  site=site, parsed=parsed, tables=tables, error=error, series=series,
                  user=session.user, csrf_token=session.csrf_token,
                  active_filters=active_filters, filter_params=list(FILTER_PARAMS),
                  column_filters=COLUMN_FILTERS, url_with=lambda **kw: _url_with(request, **kw),
                  cell_link=cell_link, steps=steps)


# API tokens

async def tokens(request: Request) -> Response:
    created = None
    with database(request) as conn:
        session = session_for(request, conn)
        if session is None:
            return _login_redirect(request)
        if request.method == "POST":
            form = await request.form()
            try:
                csrf.check_origin(request)
                csrf.check_token(form.get(csrf.FIELD), session.csrf_token)
            except csrf.CsrfError as exc:
                return render(request, "error.html", 403, message=str(exc))
            if form.get("action") == "revoke":
                revoked = _revoke_token(conn, session.user, form.get("token_id"))
                if revoked is not None:
                    return render(request, "error.html", 404, message=revoked)
                log.info("user %d revoked an API token in the dashboard", session.user.id)
                return RedirectResponse("/dashboard/tokens", status_code=303)
            label = str(form.get("label", "")).strip()[:80] or "api"
            created = auth.create_token(conn, session.user, label)
        rows = auth.list_tokens(conn, session.user)
    return render(request, "tokens.html", user=session.user, csrf_token=session.csrf_token,
                  created=created, tokens=rows, views=VIEWS, view="tokens", sites=[],
                  site=None, utc_time=_utc_time)


def _utc_time(ms: int | None) -> str:
    """Format milliseconds since the epoch as a UTC minute, or "" for None."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _revoke_token(conn: sqlite3.Connection, user: auth.User, token_id: object) -> str | None:
    """Revoke one of ``user``'s tokens by id; return an error message, or None on success."""
    if not isinstance(token_id, str) or not (token_id.isascii() and token_id.isdecimal()):
        return "No token was selected to revoke."
    if not auth.revoke_token(conn, user, int(token_id)):
        return "That API token does not exist or was already revoked."
    return None
