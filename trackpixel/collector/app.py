"""The collector: pixel, beacon, snippet, email open, click redirect and server API endpoints.

Every handler does the least it can: it reads the request, anonymises the client address,
commits one raw row to this process's spool and sends the response. Parsing and enrichment
happen later, in batches, in the processor. A handler sends a success response only after
its row is committed.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

import orjson

from trackpixel import identity, logs, rights, tokens
from trackpixel.collector.asgi import (
    CORS,
    NO_STORE,
    ASGIApp,
    BodyTooLarge,
    ClientDisconnected,
    Message,
    Receive,
    Scope,
    Send,
    header_map,
    read_body,
    respond,
    respond_error,
    respond_json,
)
from trackpixel.collector.images import GIF, PNG
from trackpixel.config import DataDir, Settings, resolve_data_dir
from trackpixel.links import InvalidDestination, normalize_destination
from trackpixel.pipeline.api import validate_api_batch
from trackpixel.pipeline.fields import MAX_URL, InvalidField, fit_url
from trackpixel.pipeline.scrub import scrub_json, scrub_query, scrub_text
from trackpixel.pipeline.userdata import hash_user_data, redact_json_body
from trackpixel.processor_status import read_status
from trackpixel.sites import SiteCache
from trackpixel.spool import HitRow, SpoolError, SpoolWriter
from trackpixel.storage.backends import max_spool_rows
from trackpixel.storage.sqlite import connect, migrate
from trackpixel.vocab import RejectReason, Source

log = logging.getLogger("trackpixel.collector")
T = TypeVar("T")

MAX_USER_AGENT = 512
MAX_TOKEN_PATH = tokens.MAX_TOKEN_CHARS + 16
_WANTED_HEADERS = frozenset({
    b"user-agent", b"referer", b"x-forwarded-for", b"dnt", b"sec-gpc", b"authorization",
    b"content-type",
})
# Paths served by the dashboard app (trackpixel.web) rather than the collector's hot path.
_WEB_PREFIXES = ("/dashboard", "/api/v1/reports", "/api/v1/openapi.json", "/static/")
# Sources whose raw payload is a JSON body that may carry contact details.
_JSON_SOURCES = (Source.BEACON, Source.API)
_ROBOTS = b"User-agent: *\nDisallow: /p.gif\nDisallow: /p.png\nDisallow: /e\nDisallow: /o/\n" \
          b"Disallow: /c/\nDisallow: /api/\n"


class Collector:
    """The ASGI application; ``create_app`` builds one for the data directory in the environment."""

    def __init__(self, data_dir: DataDir) -> None:
        self.data_dir = data_dir
        self.settings: Settings = Settings()
        self.secret = b""
        self.writer: SpoolWriter | None = None
        self.snippet = b""
        self.snippet_etag = b""
        self.spool_failures = 0
        self._sites: SiteCache | None = None
        self._salts: identity.SaltCache | None = None
        self._web: ASGIApp | None = None
        self._routes = {
            "/p.gif": self.pixel_gif,
            "/p.png": self.pixel_png,
            "/e": self.beacon,
            "/t.js": self.snippet_js,
            "/api/v1/events": self.api_events,
            "/healthz": self.healthz,
            "/robots.txt": self.robots,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        handler = self._routes.get(path)
        try:
            if handler is not None:
                await handler(scope, receive, send)
            elif path.startswith("/o/"):
                await self.email_open(scope, receive, send)
            elif path.startswith("/c/"):
                await self.click(scope, receive, send)
            elif path.startswith("/api/v1/privacy/"):
                await self.privacy_api(scope, receive, send)
            elif path.startswith(_WEB_PREFIXES):
                await self.web_app()(scope, receive, send)
            else:
                await respond_error(send, 404, "not_found", f"no endpoint at {path}")
        except ClientDisconnected:
            return

    def web_app(self) -> ASGIApp:
        """Return the dashboard and report API app, built on first use in each worker."""
        if self._web is None:
            from trackpixel.web.app import create_web_app

            self._web = create_web_app(self.data_dir)
        return self._web

    # Lifecycle

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.start()
                except Exception as exc:
                    log.exception("collector failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start(self) -> None:
        self.data_dir.ensure()
        self.settings = self.data_dir.settings()
        self.secret = self.data_dir.secret()
        conn = connect(self.data_dir.db_path)
        migrate(conn)
        self._sites = SiteCache(conn)
        self._salts = identity.SaltCache(conn)
        self.writer = SpoolWriter(self.data_dir.spool_dir, cursor_db=self.data_dir.db_path,
                                  sync=self.settings.spool_sync,
                                  max_rows=max_spool_rows(self.data_dir))
        static = resources.files("trackpixel.collector").joinpath("static")
        minified = static.joinpath("t.min.js")
        source = minified if minified.is_file() else static.joinpath("t.js")
        self.snippet = source.read_bytes()
        self.snippet_etag = b'"' + hashlib.sha256(self.snippet).hexdigest()[:16].encode() + b'"'
        # Requests allocate only short-lived objects without reference cycles, so the cyclic
        # collector runs rarely and skips everything loaded at startup.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        log.info("collector started, spool %s", self.writer.name)

    def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # Shared steps

    def _spool_row(self, scope: Scope, headers: dict[bytes, str], source: Source,
                   payload: bytes, meta: dict[str, Any]) -> HitRow:
        """Build a spool row: anonymise the address, derive the device key, keep the facts."""
        assert self._salts is not None
        peer = scope.get("client")
        address = identity.client_ip(peer[0] if peer else None,
                                     headers.get(b"x-forwarded-for"),
                                     self.settings.trusted_proxies)
        user_agent = headers.get(b"user-agent", "")[:MAX_USER_AGENT]
        key = identity.device_key(self._salts.current(), address, user_agent)
        referer = headers.get(b"referer")
        if referer:
            # Masked before it is shortened, so no part of an address is left at a cut.
            meta["ref"] = fit_url(scrub_text(referer), MAX_URL)
        if headers.get(b"dnt") == "1":
            meta["dnt"] = 1
        if headers.get(b"sec-gpc") == "1":
            meta["gpc"] = 1
        return (int(time.time() * 1000), source.value, payload, user_agent or None,
                identity.anonymize_ip(address), key, orjson.dumps(meta).decode() if meta else None)

    async def _commit(self, row: HitRow) -> bool:
        """Commit one row to the spool; return False (and log) if the spool failed."""
        assert self.writer is not None
        try:
            await self.writer.submit(row)
        except SpoolError:
            self.spool_failures += 1
            return False
        return True

    async def _record_rejection(self, scope: Scope, headers: dict[bytes, str], source: Source,
                                raw: bytes, reason: RejectReason, detail: str,
                                site_id: str | None = None, *, keep_raw: bool = True) -> None:
        """Spool a rejected request. Contact details in a JSON body are hashed or redacted
        first, as they are in accepted events.

        ``site_id`` is given only when the request proved it, by the site's API key. With
        ``keep_raw`` False the processor stores neither the payload nor the user agent."""
        # A validation message may quote a field name or value the caller sent.
        meta: dict[str, Any] = {"reject": reason.value, "detail": scrub_text(detail)}
        if site_id is not None:
            meta["site"] = site_id
        if not keep_raw:
            meta["drop_raw"] = 1
        if source in _JSON_SOURCES and raw:
            raw = redact_json_body(raw)
        await self._commit(self._spool_row(scope, headers, source, raw, meta))

    # Pixel

    async def pixel_gif(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._pixel(scope, send, _GIF_RESPONSE)

    async def pixel_png(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._pixel(scope, send, _PNG_RESPONSE)

    async def _pixel(self, scope: Scope, send: Send, response: tuple[Message, Message]) -> None:
        """Record a pixel hit and return the image, whatever the input and even on failure.

        A HEAD request gets the same headers and records nothing: link checkers and mail
        scanners send HEAD, and no browser loads an image with it. Other methods than GET are
        recorded as ``method_not_allowed``."""
        method: str = scope["method"]
        if method != "HEAD":
            headers = header_map(scope, _WANTED_HEADERS)
            query, meta = self._pixel_query(scope["query_string"])
            if method != "GET" and not meta:
                meta = {"reject": RejectReason.METHOD_NOT_ALLOWED.value,
                        "detail": f"the pixel records GET requests, not {method[:16]}"}
            await self._commit(self._spool_row(scope, headers, Source.PIXEL, query, meta))
        await send(response[0])
        await send(response[1])

    def _pixel_query(self, query: bytes) -> tuple[bytes, dict[str, Any]]:
        """Mask email addresses in the query string and cut it to ``max_query_bytes``. The
        returned meta marks a cut query as ``too_large``."""
        size = len(query)
        # An email address in a page URL must not reach the spool on disk. Masking comes
        # before the cut, so no part of an address is left at the cut.
        query = scrub_query(query)
        if size <= self.settings.max_query_bytes:
            return query, {}
        meta = {"reject": RejectReason.TOO_LARGE.value,
                "detail": f"query string of {size} bytes exceeds "
                          f"{self.settings.max_query_bytes}"}
        return query[:self.settings.max_query_bytes], meta

    async def email_open(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/o/<token>.gif``: the token is verified by the processor, the image sent at once.

        As on the pixel, HEAD records nothing and other methods than GET are rejected."""
        method: str = scope["method"]
        if method != "HEAD":
            headers = header_map(scope, _WANTED_HEADERS)
            token = scope["path"][3:]
            token = token.removesuffix(".gif").removesuffix(".png")
            meta: dict[str, Any] = {}
            if len(token) > tokens.MAX_TOKEN_CHARS:
                meta = {"reject": RejectReason.TOO_LARGE.value, "detail": "open token too long"}
                token = token[:tokens.MAX_TOKEN_CHARS]
            elif method != "GET":
                meta = {"reject": RejectReason.METHOD_NOT_ALLOWED.value,
                        "detail": f"email opens are GET requests, not {method[:16]}"}
            payload = token.encode("utf-8", "surrogateescape")
            await self._commit(self._spool_row(scope, headers, Source.OPEN, payload, meta))
        image, content_type = (PNG, b"image/png") if scope["path"].endswith(".png") \
            else (GIF, b"image/gif")
        await respond(send, 200, image, content_type, NO_STORE)

    # Click redirect

    async def click(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``/c/<token>``: record the click, then redirect to the signed destination.

        HEAD gets the same redirect and records nothing, because link scanners check links
        with HEAD. Other methods than GET get 405 and are recorded as rejected."""
        method: str = scope["method"]
        headers = header_map(scope, _WANTED_HEADERS)
        token = scope["path"][3:]
        if method not in ("GET", "HEAD"):
            await self._record_rejection(scope, headers, Source.CLICK,
                                         token[:tokens.MAX_TOKEN_CHARS].encode(),
                                         RejectReason.METHOD_NOT_ALLOWED,
                                         f"click links are GET requests, not {method[:16]}")
            await respond_error(send, 405, RejectReason.METHOD_NOT_ALLOWED.value,
                                f"use GET for {scope['path'][:3]}<token>", None,
                                [(b"allow", b"GET, HEAD"), *NO_STORE])
            return
        try:
            payload = tokens.verify(self.secret, "click", token)
            destination = payload["d"]
            if not isinstance(destination, str) or not destination.startswith(
                    ("http://", "https://")):
                raise tokens.BadToken("destination is not an http or https URL")
        except (tokens.BadToken, KeyError) as exc:
            if method == "GET":
                await self._record_rejection(scope, headers, Source.CLICK,
                                             token[:tokens.MAX_TOKEN_CHARS].encode(),
                                             RejectReason.BAD_SIGNATURE, str(exc))
            await respond(send, 400, _BAD_LINK_PAGE, b"text/html; charset=utf-8", NO_STORE)
            return
        try:
            # Links signed before destinations were checked may hold any text.
            location = normalize_destination(destination).encode("ascii")
        except InvalidDestination as exc:
            if method == "GET":
                await self._record_rejection(scope, headers, Source.CLICK,
                                             token[:tokens.MAX_TOKEN_CHARS].encode(),
                                             RejectReason.INVALID_FIELD, str(exc)[:500])
            await respond(send, 400, _BAD_DESTINATION_PAGE, b"text/html; charset=utf-8",
                          NO_STORE)
            return
        if method == "GET":
            await self._commit(self._spool_row(scope, headers, Source.CLICK, token.encode(), {}))
        await respond(send, 302, b"", b"text/plain", [(b"location", location), *NO_STORE])

    # Beacon

    async def beacon(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /e``: a JSON batch from the snippet, sent as text/plain by sendBeacon."""
        if scope["method"] == "OPTIONS":
            await respond(send, 204, b"", b"text/plain", [
                *CORS, (b"access-control-allow-methods", b"POST"),
                (b"access-control-allow-headers", b"content-type"),
                (b"access-control-max-age", b"86400")])
            return
        if scope["method"] != "POST":
            await respond_error(send, 405, "method_not_allowed", "use POST for /e", None,
                                [(b"allow", b"POST, OPTIONS"), *CORS])
            return
        headers = header_map(scope, _WANTED_HEADERS)
        try:
            body = await read_body(receive, self.settings.max_body_bytes)
        except BodyTooLarge as exc:
            await self._record_rejection(scope, headers, Source.BEACON, exc.head,
                                         RejectReason.TOO_LARGE, str(exc))
            await respond_error(send, 413, RejectReason.TOO_LARGE.value, str(exc), None, CORS)
            return
        try:
            parsed = orjson.loads(body)
            if not isinstance(parsed, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            await self._record_rejection(scope, headers, Source.BEACON, body,
                                         RejectReason.MALFORMED_JSON, str(exc))
            await respond_error(send, 400, RejectReason.MALFORMED_JSON.value,
                                f"invalid JSON body: {exc}", None, CORS)
            return
        try:
            hashed = _hash_beacon_user_data(parsed)
        except InvalidField as exc:
            await self._record_rejection(scope, headers, Source.BEACON, body,
                                         RejectReason.INVALID_FIELD, str(exc))
            await respond_error(send, 400, RejectReason.INVALID_FIELD.value, str(exc),
                                None, CORS)
            return
        # Email addresses in page URLs, titles and properties are masked before the spool
        # write, as on the pixel.
        scrubbed = scrub_json(parsed)
        if hashed or scrubbed is not parsed:
            body = orjson.dumps(scrubbed)
        if not await self._commit(self._spool_row(scope, headers, Source.BEACON, body, {})):
            await respond_error(send, 503, "unavailable", "the event could not be stored; retry",
                                None, CORS)
            return
        await respond(send, 204, b"", b"text/plain", CORS)

    # Server API

    async def api_events(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /api/v1/events``: server-side events, authenticated by the site's API key."""
        if scope["method"] != "POST":
            await respond_error(send, 405, "method_not_allowed", "use POST for /api/v1/events",
                                None, [(b"allow", b"POST")])
            return
        headers = header_map(scope, _WANTED_HEADERS)
        assert self._sites is not None
        auth = headers.get(b"authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        site = self._sites.by_api_key(key) if key else None
        if site is None:
            await self._reject_unauthenticated(scope, receive, send, headers)
            return

        try:
            body = await read_body(receive, self.settings.max_body_bytes)
        except BodyTooLarge as exc:
            await self._record_rejection(scope, headers, Source.API, exc.head,
                                         RejectReason.TOO_LARGE, str(exc), site.id)
            await respond_error(send, 413, RejectReason.TOO_LARGE.value, str(exc))
            return
        try:
            parsed = orjson.loads(body)
        except ValueError as exc:
            await self._record_rejection(scope, headers, Source.API, body,
                                         RejectReason.MALFORMED_JSON, str(exc), site.id)
            await respond_error(send, 400, RejectReason.MALFORMED_JSON.value,
                                f"invalid JSON body: {exc}")
            return
        events, errors = validate_api_batch(parsed, now_ms=int(time.time() * 1000))
        if errors:
            await self._record_rejection(scope, headers, Source.API, body,
                                         RejectReason.INVALID_FIELD, "; ".join(errors)[:1000],
                                         site.id)
            await respond_error(send, 400, RejectReason.INVALID_FIELD.value,
                                "the batch was not stored because some events are invalid",
                                list(errors))
            return

        payload = orjson.dumps(scrub_json({"site": site.id, "events": events}))
        if not await self._commit(self._spool_row(scope, headers, Source.API, payload, {})):
            await respond_error(send, 503, "unavailable", "the events could not be stored; retry")
            return
        await respond_json(send, 200, {"accepted": len(events)})

    async def _reject_unauthenticated(self, scope: Scope, receive: Receive, send: Send,
                                      headers: dict[bytes, str]) -> None:
        """Send 401 and record the request by its size only. The body is read but never
        spooled, so requests without a valid key cannot fill the disk with content."""
        try:
            size = f"{len(await read_body(receive, self.settings.max_body_bytes))} bytes"
        except BodyTooLarge:
            size = f"more than {self.settings.max_body_bytes} bytes"
        await self._record_rejection(scope, headers, Source.API, b"", RejectReason.UNAUTHORIZED,
                                     f"missing or unknown API key; body of {size} not stored",
                                     keep_raw=False)
        await respond_error(send, 401, RejectReason.UNAUTHORIZED.value,
                            "missing or unknown API key: send 'Authorization: Bearer <key>'",
                            None, [(b"www-authenticate", b"Bearer")])

    # Privacy requests

    async def privacy_api(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Export or erase one person's data, authenticated by the site's API key.

        ``POST /api/v1/privacy/export`` and ``/erase`` take ``{"visitor_id" | "user_id" |
        "email": value}``; an erasure returns 202 with a request id, and
        ``GET /api/v1/privacy/requests/<id>`` reports when it is done."""
        headers = header_map(scope, _WANTED_HEADERS)
        assert self._sites is not None
        auth = headers.get(b"authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        site = self._sites.by_api_key(key) if key else None
        if site is None:
            await respond_error(send, 401, RejectReason.UNAUTHORIZED.value,
                                "missing or unknown API key: send 'Authorization: Bearer <key>'",
                                None, [(b"www-authenticate", b"Bearer")])
            return
        action = scope["path"].removeprefix("/api/v1/privacy/")
        if action.startswith("requests/") and scope["method"] == "GET":
            await self._privacy_status(send, site.id, action.removeprefix("requests/"))
            return
        if scope["method"] != "POST" or action not in ("export", "erase"):
            await respond_error(send, 404, "not_found", f"no privacy endpoint at {scope['path']}")
            return
        try:
            body = orjson.loads(await read_body(receive, self.settings.max_body_bytes))
            kind, value = _privacy_selector(body)
            selector = rights.selector(site.id, kind, value)
        except (ValueError, BodyTooLarge) as exc:
            await respond_error(send, 400, "invalid_request", str(exc))
            return
        if action == "export":
            result = await asyncio.to_thread(self._export, selector)
            await respond_json(send, 200, result)
            return
        request_id = await asyncio.to_thread(self._with_db, rights.request_erasure, selector)
        await respond_json(send, 202, {"request_id": request_id, "status": "pending"})

    async def _privacy_status(self, send: Send, site_id: str, raw_id: str) -> None:
        status = None
        if raw_id.isdigit():
            status = await asyncio.to_thread(self._with_db, rights.request_status, int(raw_id))
        if status is None or status["site_id"] != site_id:
            await respond_error(send, 404, "not_found", f"no privacy request {raw_id!r}")
            return
        await respond_json(send, 200, status)

    def _export(self, selector: rights.Selector) -> dict[str, Any]:
        """Export from the configured event store; SQLite needs no second connection."""
        from trackpixel.storage.backends import SQLITE_URL, STORE_ENV, resolve_store_url

        url = resolve_store_url(self.data_dir, os.environ.get(STORE_ENV))
        if url == SQLITE_URL:
            return self._with_db(rights.export, selector)
        from trackpixel.storage.clickhouse import ClickHouseStore

        events = ClickHouseStore(url, apply_migrations=False)
        try:
            return self._with_db(rights.export, selector, events)
        finally:
            events.close()

    def _with_db(self, func: Callable[..., T], *args: Any) -> T:
        conn = connect(self.data_dir.db_path)
        conn.execute("PRAGMA secure_delete=ON")
        try:
            return func(conn, *args)
        finally:
            conn.close()

    # Static

    async def snippet_js(self, scope: Scope, receive: Receive, send: Send) -> None:
        extra = [(b"cache-control", b"public, max-age=3600"), (b"etag", self.snippet_etag), *CORS]
        for name, value in scope["headers"]:
            if name == b"if-none-match" and value == self.snippet_etag:
                await respond(send, 304, b"", b"application/javascript", extra)
                return
        await respond(send, 200, self.snippet, b"application/javascript; charset=utf-8", extra)

    async def healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        problems = []
        if self.writer is None:
            problems.append("spool is not open")
        if self.spool_failures:
            problems.append(f"{self.spool_failures} spool writes failed")
        processor = read_status()
        processor_problem = processor.problem() if processor is not None else None
        if processor_problem:
            problems.append(processor_problem)
        body: dict[str, Any] = {
            "status": "degraded" if problems else "ok",
            "spool": self.writer.name if self.writer else None,
            "spool_failures": self.spool_failures,
        }
        if processor is not None:
            body["processor"] = {"state": processor.state, "pid": processor.pid,
                                 "restarts": processor.restarts,
                                 "recent_restarts": processor.recent_restarts()}
        if problems:
            body["reason"] = "; ".join(problems)
        await respond_json(send, 503 if problems else 200, body)

    async def robots(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, _ROBOTS, b"text/plain; charset=utf-8")


def _privacy_selector(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise ValueError('the body must be a JSON object such as {"email": "..."}')
    given = [(kind, body[key]) for key, kind in (("visitor_id", "visitor"),
                                                 ("user_id", "user_id"), ("email", "email"))
             if isinstance(body.get(key), str)]
    if len(given) != 1:
        raise ValueError("give exactly one of visitor_id, user_id or email")
    return given[0]


def _hash_beacon_user_data(parsed: dict[str, Any]) -> bool:
    """Replace each event's ``ud`` contact details by their digests in place and drop a
    batch-level ``ud``, which the processor does not read. Return True if anything changed.

    The parsed body decides, so a key written with JSON escapes (``"\\u0075d"``) is found
    too."""
    changed = parsed.pop("ud", None) is not None
    events = parsed.get("events")
    if isinstance(events, list):
        for event in events:
            if isinstance(event, dict) and "ud" in event:
                event["ud"] = hash_user_data(event["ud"])
                changed = True
    return changed


def _image_response(image: bytes, content_type: bytes) -> tuple[Message, Message]:
    """Build the two ASGI messages of a pixel response once, because all pixel responses are
    the same."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(image)).encode()),
               *NO_STORE]
    return ({"type": "http.response.start", "status": 200, "headers": headers},
            {"type": "http.response.body", "body": image})


_GIF_RESPONSE = _image_response(GIF, b"image/gif")
_PNG_RESPONSE = _image_response(PNG, b"image/png")

_BAD_LINK_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Invalid link</title>"
    b"<h1>Invalid link</h1><p>This tracking link is damaged or was not issued by this server, "
    b"so it was not followed.</p></html>"
)

_BAD_DESTINATION_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Invalid link</title>"
    b"<h1>Invalid link</h1><p>This tracking link points to an invalid address, so it was not "
    b"followed.</p></html>"
)


def create_app() -> Collector:
    """Build the collector for ``$TRACKPIXEL_DATA_DIR``; granian calls this in each worker."""
    logs.configure()
    return Collector(resolve_data_dir(None))
