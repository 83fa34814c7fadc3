"""The OpenAPI 3.1 description of the report API, built from the report registry."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from trackpixel.web.reports import (
    FILTER_PARAMS,
    FIRST_REPORT_DAY,
    INTERVALS,
    LAST_REPORT_DAY,
    MAX_LIMIT,
    REPORTS,
)


def _param(name: str, description: str, schema: dict[str, Any], *,
           where: str = "query", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "description": description,
            "schema": schema}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def document() -> dict[str, Any]:
    text = {"type": "string"}
    parameters = [
        _param("report", "Report name.", {"type": "string", "enum": list(REPORTS)},
               where="path", required=True),
        _param("site", "Site id or domain; default: the first site the user may see.", text),
        _param("from", "First day, YYYY-MM-DD in the site's time zone; default: 29 days "
               f"before `to`. Days from {FIRST_REPORT_DAY} to {LAST_REPORT_DAY}.",
               {"type": "string", "format": "date"}),
        _param("to", "Last day, inclusive; default: today in the site's time zone. Days from "
               f"{FIRST_REPORT_DAY} to {LAST_REPORT_DAY}.",
               {"type": "string", "format": "date"}),
        _param("format", "Response format.", {"type": "string", "enum": ["json", "csv"],
                                              "default": "json"}),
        _param("limit", "Maximum rows.", {"type": "integer", "minimum": 1,
                                          "maximum": MAX_LIMIT, "default": 50}),
        _param("interval", "Bucket size of `timeseries`.",
               {"type": "string", "enum": list(INTERVALS), "default": "day"}),
        _param("goal", "Count only custom events with this name as conversions.", text),
        _param("prop", "Only events whose custom property KEY has VALUE, as KEY=VALUE.", text),
        _param("prop_event", "`event_properties`: only this event name.", text),
        {"name": "step", "in": "query", "required": False, "explode": True,
         "description": "`funnel`: a step, repeated in order: `event:NAME` or `page:/PATH`, "
                        "optionally followed by `|KEY=VALUE`.",
         "schema": {"type": "array", "items": text}},
        _param("window_hours", "`funnel`: hours after step 1 within which later steps count.",
               {"type": "integer", "minimum": 1, "maximum": 2160, "default": 24}),
    ]
    parameters += [_param(name, f"Only events whose `{column}` equals this value.", text)
                   for name, column in FILTER_PARAMS.items()]
    cell = {"type": ["string", "number", "integer", "null"]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "trackpixel report API", "version": version("trackpixel"),
                 "description": "Reports over a site's events. Authenticate with "
                                "`Authorization: Bearer TOKEN`, a token printed by "
                                "`trackpixel users token EMAIL`."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": text, "message": text,
                                   "details": {"type": "object"}}}}},
                "ReportList": {"type": "object", "required": ["reports"], "properties": {
                    "reports": {"type": "array", "items": {
                        "type": "object", "required": ["name", "description"],
                        "properties": {"name": text, "description": text}}}}},
                "Report": {"type": "object",
                           "required": ["report", "title", "site", "from", "to", "filters",
                                        "columns", "rows"],
                           "properties": {
                               "report": text, "title": text, "site": text,
                               "from": {"type": "string", "format": "date"},
                               "to": {"type": "string", "format": "date"},
                               "filters": {"type": "object",
                                           "additionalProperties": text},
                               "columns": {"type": "array", "items": text},
                               "rows": {"type": "array", "items": {"type": "array",
                                                                   "items": cell}}}},
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/reports": {"get": {
                "summary": "List the reports.", "operationId": "listReports",
                # The list needs no credentials.
                "security": [],
                "responses": {"200": {
                    "description": "Report names and descriptions.",
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ReportList"}}}}}}},
            "/api/v1/reports/{report}": {"get": {
                "summary": "Run one report.", "operationId": "runReport",
                "description": "\n".join(f"- `{spec.name}`: {spec.description}"
                                         for spec in REPORTS.values()),
                "parameters": parameters,
                "responses": {
                    "200": {"description": "The report as JSON, or CSV with format=csv.",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Report"}},
                                "text/csv": {"schema": text}}},
                    "400": _error("A parameter is invalid (code `invalid_parameter`) or "
                                  "unknown (code `unknown_parameter`, with "
                                  "details.allowed_filters and details.allowed_parameters). "
                                  "details.param names it."),
                    "401": _error("Missing or invalid token."),
                    "403": _error("No `site` was given and the user may not see any site "
                                  "(code `no_site`)."),
                    "404": _error("Unknown report, or a site that does not exist or that "
                                  "the user may not see."),
                    "500": _error("The report query failed (code `report_failed`); the "
                                  "server log has the cause."),
                    "503": _error("The event store (ClickHouse) cannot be reached (code "
                                  "`store_unavailable`); retry later."),
                }}},
        },
    }


def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(document())
