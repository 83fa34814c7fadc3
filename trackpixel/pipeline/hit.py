"""Parsing: turn a spool row into typed hits, or into a rejection with its reason."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import orjson

from trackpixel import privacy, tokens
from trackpixel.pipeline import fields
from trackpixel.pipeline.fields import InvalidField
from trackpixel.spool import SpoolHit
from trackpixel.vocab import (
    CLICK,
    EMAIL_OPEN,
    IMPRESSION,
    PAGE_VIEW,
    EventKind,
    RejectReason,
    Source,
)

MAX_BEACON_EVENTS = 50


class InvalidHit(Exception):
    """A hit cannot become an event; ``reason`` is the recorded rejection reason."""

    def __init__(self, reason: RejectReason, detail: str, site_id: str | None = None, *,
                 keep_raw: bool = True) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.site_id = site_id
        # False when the request is not to be stored: storing it would collect what consent
        # refused, or it came without a valid API key.
        self.keep_raw = keep_raw


@dataclass(slots=True)
class Hit:
    """One event as sent, before enrichment. ``params`` holds explicit UTM, click id and ad
    fields; the same keys found in the page URL are read by the channel step."""

    uid: str
    source: Source
    kind: EventKind
    ts: int
    site_id: str
    name: str
    url: str | None = None
    referrer: str | None = None
    title: str | None = None
    client_event_id: str | None = None
    value: float | None = None
    currency: str | None = None
    props: dict[str, Any] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    visitor_cookie: str | None = None
    recipient: str | None = None
    channel_hint: str | None = None
    user_agent: str = ""
    ip_anon: str | None = None
    device_key: str | None = None
    dnt: bool = False
    gpc: bool = False
    consent: dict[str, str] = field(default_factory=dict)
    user_data: dict[str, str] | None = None


def parse_spool_hit(row: SpoolHit, spool: str, secret: bytes) -> list[Hit | InvalidHit]:
    """Parse one spool row; a beacon or API row can hold several events."""
    meta: dict[str, Any] = orjson.loads(row.meta) if row.meta else {}
    if "reject" in meta:
        return [InvalidHit(RejectReason(meta["reject"]), str(meta.get("detail", "")),
                           _claimed_site(row, meta), keep_raw=not meta.get("drop_raw"))]
    base = f"{spool}:{row.rowid}"
    try:
        match row.source:
            case Source.PIXEL:
                return [_parse_pixel(row, meta, base)]
            case Source.BEACON:
                return _parse_batch(row, meta, base, Source.BEACON)
            case Source.API:
                return _parse_batch(row, meta, base, Source.API)
            case Source.OPEN:
                return [_parse_open(row, meta, base, secret)]
            case Source.CLICK:
                return [_parse_click(row, meta, base, secret)]
    except InvalidHit as exc:
        return [exc]
    return [InvalidHit(RejectReason.INVALID_FIELD, f"unknown source {row.source!r}")]


def _claimed_site(row: SpoolHit, meta: dict[str, Any]) -> str | None:
    """Return the site id that a request rejected by the collector names, or None.

    The collector sets ``site`` for a server API request authenticated by the site's key.
    Otherwise the id comes from the request as sent: the pixel's ``s`` parameter, the
    beacon's ``s`` field or an open or click token's ``s`` claim, whose signature may be
    invalid. That is no weaker than the pixel's ``s``, which anyone can send, and the
    processor keeps the id only when such a site exists."""
    if isinstance(meta.get("site"), str):
        return str(meta["site"])
    payload = row.payload or b""
    match row.source:
        case Source.PIXEL:
            return _query_site(payload)
        case Source.BEACON:
            try:
                body = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return None
            site_id = body.get("s") if isinstance(body, dict) else None
            return site_id if isinstance(site_id, str) else None
        case Source.OPEN | Source.CLICK:
            return _token_site(payload)
    return None


def _query_site(query: bytes) -> str | None:
    """Read the first non-blank ``s`` parameter, as ``_decode_query`` does, of a query string
    that may be cut or contain bytes that are not UTF-8 in other parameters."""
    for pair in query.split(b"&"):
        name, _, value = pair.partition(b"=")
        if name != b"s" or not value:
            continue
        try:
            return unquote_plus(value.decode("ascii"), errors="strict").strip() or None
        except UnicodeError:
            return None
    return None


def _token_site(token: bytes) -> str | None:
    """Read the ``s`` claim of a token without checking its signature."""
    body = token.partition(b".")[0]
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        return None
    site_id = payload.get("s") if isinstance(payload, dict) else None
    return site_id if isinstance(site_id, str) else None


def _common(row: SpoolHit, meta: dict[str, Any], uid: str, source: Source) -> dict[str, Any]:
    return {
        "uid": uid,
        "source": source,
        "ts": row.received_ts,
        "user_agent": row.user_agent or "",
        "ip_anon": row.ip_anon,
        "device_key": row.device_key,
        "dnt": bool(meta.get("dnt")),
        "gpc": bool(meta.get("gpc")),
    }


def _decode_query(payload: bytes) -> dict[str, str]:
    try:
        text = payload.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=False, encoding="utf-8", errors="strict",
                          max_num_fields=200)
    except UnicodeDecodeError as exc:
        detail = f"query string is not valid UTF-8: {exc}"
        if b"%%" in payload:
            # %%CAMPAIGN%% decodes as the byte 0xCA followed by text.
            detail += ("; the query contains %%, as an ad server macro such as %%CAMPAIGN%% does "
                       "when the ad server did not replace it")
        raise InvalidHit(RejectReason.INVALID_UTF8, detail) from exc
    except ValueError as exc:
        raise InvalidHit(RejectReason.INVALID_FIELD, f"query string: {exc}") from exc
    params: dict[str, str] = {}
    for key, value in pairs:
        params.setdefault(key, value)  # the first occurrence wins
    return params


def _parse_pixel(row: SpoolHit, meta: dict[str, Any], uid: str) -> Hit:
    try:
        params = _decode_query(row.payload or b"")
    except InvalidHit as exc:
        exc.site_id = _query_site(row.payload or b"")
        raise
    site_id = params.get("s", "").strip()
    if not site_id:
        raise InvalidHit(RejectReason.MISSING_SITE, "the s (site id) parameter is missing")
    try:
        name = fields.event_name(params.get("e"), default=PAGE_VIEW)
        page = fields.url(params.get("u") or meta.get("ref"), "u", fit=True)
        props = fields.properties(
            {key[2:]: value for key, value in params.items() if key.startswith("p.")})
        hit = Hit(
            site_id=site_id,
            kind=_kind_for(name),
            name=name,
            url=page,
            referrer=fields.referrer(params.get("r"), "r"),
            title=fields.text(params.get("t"), "t", fields.MAX_TITLE, clip=True),
            client_event_id=fields.text(params.get("id"), "id", fields.MAX_EVENT_ID),
            value=fields.money_value(params.get("v")),
            currency=fields.currency(params.get("cur")),
            props=props,
            params=_explicit_params(params),
            visitor_cookie=fields.visitor_cookie(params.get("vid")),
            consent=privacy.parse_compact(params.get("cs")),
            **_common(row, meta, uid, Source.PIXEL),
        )
    except InvalidField as exc:
        raise InvalidHit(RejectReason.INVALID_FIELD, str(exc), site_id) from exc
    return hit


def _explicit_params(params: dict[str, Any]) -> dict[str, str]:
    explicit = {}
    for key in (*fields.UTM_PARAMS, *fields.CLICK_ID_PARAMS, *fields.AD_PARAMS):
        value = fields.text(params.get(key), key, fields.MAX_PARAM)
        if value:
            explicit[key] = value
    return explicit


def _kind_for(name: str) -> EventKind:
    if name == PAGE_VIEW:
        return EventKind.PAGE_VIEW
    if name == IMPRESSION:
        return EventKind.IMPRESSION
    return EventKind.CUSTOM


def _parse_batch(row: SpoolHit, meta: dict[str, Any], base: str,
                 source: Source) -> list[Hit | InvalidHit]:
    try:
        body = orjson.loads(row.payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidHit(RejectReason.MALFORMED_JSON, str(exc)) from exc
    if not isinstance(body, dict):
        raise InvalidHit(RejectReason.MALFORMED_JSON, "the body must be a JSON object")
    site_id = body.get("site") if source is Source.API else body.get("s")
    if not isinstance(site_id, str) or not site_id:
        raise InvalidHit(RejectReason.MISSING_SITE, "the s (site id) field is missing")
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise InvalidHit(RejectReason.INVALID_FIELD, '"events" must be a non-empty list', site_id)
    if len(events) > MAX_BEACON_EVENTS and source is Source.BEACON:
        raise InvalidHit(RejectReason.INVALID_FIELD,
                         f"a beacon holds at most {MAX_BEACON_EVENTS} events", site_id)
    consent = privacy.parse_signals(body.get("consent"))
    batch_visitor = fields.visitor_cookie(body.get("vid"))

    parsed: list[Hit | InvalidHit] = []
    for index, event in enumerate(events):
        uid = f"{base}:{index}"
        try:
            parsed.append(_parse_batch_event(row, meta, uid, source, site_id, event,
                                             batch_visitor, consent))
        except (InvalidField, InvalidHit) as exc:
            rejection = InvalidHit(RejectReason.INVALID_FIELD, f"events[{index}]: {exc}",
                                   site_id)
            parsed.append(rejection)
    return parsed


def _parse_batch_event(row: SpoolHit, meta: dict[str, Any], uid: str, source: Source,
                       site_id: str, event: Any, batch_visitor: str | None,
                       consent: dict[str, str]) -> Hit:
    if not isinstance(event, dict):
        raise InvalidField("each event must be a JSON object")
    name = fields.event_name(event.get("e"), default=PAGE_VIEW)
    common = _common(row, meta, uid, source)
    if source is Source.API and isinstance(event.get("ts"), int):
        common["ts"] = event["ts"]
    visitor = batch_visitor
    if source is Source.API:
        visitor = fields.text(event.get("vid"), "visitor_id", 64)
        consent = {**consent, **privacy.parse_signals(event.get("consent"))}
    user_data = event.get("ud") if isinstance(event.get("ud"), dict) else None
    return Hit(
        site_id=site_id,
        kind=_kind_for(name),
        name=name,
        # The server API rejected over-long fields before spooling, so fitting and clipping
        # change only what a browser sent.
        url=fields.url(event.get("u"), "u", fit=True),
        referrer=fields.referrer(event.get("r"), "r"),
        title=fields.text(event.get("t"), "t", fields.MAX_TITLE, clip=True),
        client_event_id=fields.text(event.get("id"), "id", fields.MAX_EVENT_ID),
        value=fields.money_value(event.get("v")),
        currency=fields.currency(event.get("cur")),
        props=fields.properties(event.get("p")),
        params=_explicit_params(event),
        visitor_cookie=visitor,
        consent=consent,
        user_data=user_data,
        **common,
    )


def _parse_open(row: SpoolHit, meta: dict[str, Any], uid: str, secret: bytes) -> Hit:
    token = (row.payload or b"").decode("utf-8", "replace")
    try:
        payload = tokens.verify(secret, "open", token)
    except tokens.BadToken as exc:
        raise InvalidHit(RejectReason.BAD_SIGNATURE, f"open token: {exc}",
                         _token_site(row.payload or b"")) from exc
    site_id = str(payload.get("s", ""))
    campaign = str(payload.get("cmp", "")) or None
    return Hit(
        site_id=site_id,
        kind=EventKind.EMAIL_OPEN,
        name=EMAIL_OPEN,
        recipient=str(payload.get("r", "")) or None,
        params={"cmp": campaign} if campaign else {},
        channel_hint="email",
        **_common(row, meta, uid, Source.OPEN),
    )


def _parse_click(row: SpoolHit, meta: dict[str, Any], uid: str, secret: bytes) -> Hit:
    token = (row.payload or b"").decode("utf-8", "replace")
    try:
        payload = tokens.verify(secret, "click", token)
    except tokens.BadToken as exc:
        raise InvalidHit(RejectReason.BAD_SIGNATURE, f"click token: {exc}",
                         _token_site(row.payload or b"")) from exc
    params = {key: str(payload[key]) for key in fields.AD_PARAMS if payload.get(key)}
    return Hit(
        site_id=str(payload.get("s", "")),
        kind=EventKind.CLICK,
        name=CLICK,
        url=str(payload.get("d", "")) or None,
        recipient=str(payload.get("r", "")) or None,
        params=params,
        channel_hint=str(payload["ch"]) if payload.get("ch") else None,
        **_common(row, meta, uid, Source.CLICK),
    )
