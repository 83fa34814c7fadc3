"""The JSON report API: ``GET /api/v1/reports/{report}`` with a bearer token or a session.

A report answers ``{"report", "title", "site", "from", "to", "filters", "columns", "rows"}``
where each row is a list in column order, or CSV with ``format=csv``. Errors answer
``{"error": {"code", "message", "details"?}}``.
"""

from __future__ import annotations

import io
import logging
import sqlite3
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from trackpixel.csvfile import write_csv
from trackpixel.reports.run import Table
from trackpixel.sites import Site, UnknownSite, get_site
from trackpixel.web import auth
from trackpixel.web.context import config, database, json_error, session_for, visible_sites
from trackpixel.web.reports import (
    FILTERS,
    OPTION_PARAMS,
    REPORTS,
    ParamError,
    ReportRequest,
    ReportUnavailable,
    UnknownParam,
    parse_request,
    run_report,
)

log = logging.getLogger("trackpixel.web.api")



def authenticate(request: Request, conn: sqlite3.Connection) -> auth.User | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return auth.user_for_token(conn, token.strip())
    session = session_for(request, conn)
    return session.user if session else None


def table_csv(table: Table) -> str:
    buffer = io.StringIO()
    write_csv(buffer, table.columns, table.rows, lineterminator="\r\n")
    return buffer.getvalue()


def report_body(name: str, site: Site, request: ReportRequest, table: Table) -> dict[str, Any]:
    return {"report": name, "title": table.title, "site": site.id,
            "from": request.query.from_day, "to": request.query.to_day,
            "filters": request.filters, "columns": table.columns, "rows": table.rows}


def resolve_site(conn: sqlite3.Connection, user: auth.User,
                 site_param: str | None) -> Site | Response:
    """Return the requested site, or the user's first site, or an error response."""
    if site_param:
        try:
            site = get_site(conn, site_param)
        except UnknownSite:
            return json_error(404, "site_not_found", f"site {site_param!r} not found")
        if not user.can_see(site.id):
            # The same answer as for a missing site, so ids of other sites cannot be probed.
            return json_error(404, "site_not_found", f"site {site_param!r} not found")
        return site
    sites = visible_sites(conn, user)
    if not sites:
        return json_error(403, "no_site", "this user may not see any site")
    return sites[0]


def report(request: Request) -> Response:
    name = request.path_params["report"]
    with database(request) as conn:
        user = authenticate(request, conn)
        if user is None:
            return json_error(401, "unauthorized", "missing or invalid credentials: send "
                              "'Authorization: Bearer TOKEN' with a token from "
                              "'trackpixel users token EMAIL'")
        if name not in REPORTS:
            return json_error(404, "report_not_found", f"no report named {name!r}",
                              {"reports": sorted(REPORTS)})
        site = resolve_site(conn, user, request.query_params.get("site"))
    if isinstance(site, Response):
        return site
    output = request.query_params.get("format", "json")
    if output not in ("json", "csv"):
        return json_error(400, "invalid_parameter", f"format={output!r} must be json or csv",
                          {"param": "format"})
    try:
        parsed = replace(parse_request(site, request.query_params,
                                       request.query_params.getlist("step")),
                         unattributed=user.is_admin)
        settings = config(request)
        table = run_report(settings.db_path, name, site, parsed, settings.store_url)
    except UnknownParam as exc:
        return json_error(400, "unknown_parameter", str(exc), {
            "param": exc.param, "allowed_filters": list(FILTERS),
            "allowed_parameters": list(OPTION_PARAMS)})
    except ParamError as exc:
        return json_error(400, "invalid_parameter", str(exc), {"param": exc.param})
    except ValueError as exc:
        return json_error(400, "invalid_parameter", str(exc))
    except ReportUnavailable as exc:
        log.error("report %s for site %s failed: %s", name, site.id, exc)
        return json_error(503, "store_unavailable",
                          "the event store cannot be reached; try again shortly")
    except RuntimeError as exc:
        log.error("report %s for site %s failed: %s", name, site.id, exc)
        return json_error(500, "report_failed", "the report query failed; see the server log")
    if output == "csv":
        filename = f"{name}-{site.id}-{parsed.query.from_day}-{parsed.query.to_day}.csv"
        return Response(table_csv(table), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"',
                                 "Cache-Control": "no-store"})
    return JSONResponse(report_body(name, site, parsed, table),
                        headers={"Cache-Control": "no-store"})


def report_index(request: Request) -> Response:
    return JSONResponse({"reports": [{"name": spec.name, "description": spec.description}
                                     for spec in REPORTS.values()]})


def not_found(request: Request) -> Response:
    return json_error(404, "not_found", f"no endpoint at {request.url.path}")
