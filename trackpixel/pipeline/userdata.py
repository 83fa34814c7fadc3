"""Contact details: normalised and SHA-256 hashed before anything is written to disk.

Normalisation follows what the ad platforms' conversion APIs expect, so the digests can be
forwarded as they are: email trimmed and lower-cased; phone reduced to digits with the country
code and no leading zeros; names lower-cased without punctuation; external ids trimmed. A value
that is already a 64-character hex digest is taken as hashed and only lower-cased.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

import orjson

from trackpixel.pipeline.fields import InvalidField
from trackpixel.pipeline.scrub import REDACTED, scrub_bytes, scrub_json

# Input keys accepted from callers, and the short key each digest is stored under.
USER_DATA_KEYS = {"email": "em", "phone": "ph", "first_name": "fn", "last_name": "ln",
                  "external_id": "external_id", "user_id": "external_id"}
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalise_email(value: str) -> str:
    email = value.strip().lower()
    if not _EMAIL.match(email):
        raise InvalidField("user_data.email is not an email address")
    return email


def normalise_phone(value: str) -> str:
    digits = re.sub(r"\D", "", value).lstrip("0")
    if len(digits) < 8 or len(digits) > 15:
        raise InvalidField("user_data.phone must have 8 to 15 digits including the country code")
    return digits


def normalise_name(value: str) -> str:
    text = unicodedata.normalize("NFC", value).strip().lower()
    return re.sub(r"[\s\W_]+", "", text)


def _digest(key: str, value: str) -> str:
    if _HEX64.match(value):
        return value.lower()
    if key == "em":
        return sha256(normalise_email(value))
    if key == "ph":
        return sha256(normalise_phone(value))
    if key in ("fn", "ln"):
        return sha256(normalise_name(value))
    return sha256(value.strip())


def hash_user_data(value: Any) -> dict[str, str] | None:
    """Return ``{"em": digest, ...}`` for a caller's contact details, or None if empty."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidField("user_data must be a JSON object")
    hashed: dict[str, str] = {}
    for key, item in value.items():
        short = USER_DATA_KEYS.get(key)
        if short is None:
            raise InvalidField(f"user_data.{key} is not accepted; use "
                               f"{', '.join(sorted(USER_DATA_KEYS))}")
        if item is None or item == "":
            continue
        if not isinstance(item, str) or len(item) > 500:
            raise InvalidField(f"user_data.{key} must be a string of at most 500 characters")
        hashed[short] = _digest(short, item)
    return hashed or None


_SHORT_KEYS = frozenset(USER_DATA_KEYS.values())
# Object keys under which requests carry contact details: the server API's long name and
# the beacon's short one.
CONTACT_FIELDS = frozenset({"user_data", "ud"})
# A JSON string literal, closed or cut off at the end of the body, and the colon after it
# when it is an object key.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*("?)(\s*:)?', re.S)


def redact_user_data(value: Any) -> dict[str, str] | str | None:
    """Return contact details in the form a rejected hit may keep.

    Each value is replaced by the digest that an accepted event stores under the same short
    key. A value that cannot be hashed becomes ``redacted``: one under an unknown key such as
    ``city``, one that is not a string, an invalid address."""
    if value is None:
        return None
    if not isinstance(value, dict):
        return REDACTED
    digests: dict[str, str] = {}
    for key, item in value.items():
        # The short keys are those of a body the collector has already hashed.
        short = USER_DATA_KEYS.get(key) or (key if key in _SHORT_KEYS else None)
        name = short or key
        if short is None or not isinstance(item, str) or not item or len(item) > 500:
            digests[name] = REDACTED
            continue
        try:
            digests[name] = _digest(short, item)
        except InvalidField:
            digests[name] = REDACTED
    return digests


def redact_contact_fields(value: Any) -> Any:
    """Return a parsed JSON body with the contents of every ``user_data`` and ``ud`` object,
    at any depth, replaced by ``redact_user_data``."""
    if isinstance(value, list):
        return [redact_contact_fields(item) for item in value]
    if isinstance(value, dict):
        return {key: redact_user_data(item) if key in CONTACT_FIELDS
                else redact_contact_fields(item) for key, item in value.items()}
    return value


def redact_json_body(body: bytes) -> bytes:
    """Return a JSON request body with no plain contact detail, for a rejected hit.

    A body that parses keeps its structure with contact details hashed or redacted and email
    addresses masked. A body that does not parse (cut off at the size limit, or malformed)
    cannot be searched for the contact fields, so every string value in it is replaced by
    ``"redacted"``. Only object keys that are plain identifiers, numbers and punctuation
    are kept."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        # NOTE: a contact detail written outside a string literal, such as an unquoted phone
        # number in malformed JSON, is kept; email addresses are still masked.
        return scrub_bytes(_JSON_STRING.sub(_mask_string_value, body))
    return orjson.dumps(scrub_json(redact_contact_fields(parsed)))


def _mask_string_value(match: re.Match[bytes]) -> bytes:
    closed, colon = match.group(1), match.group(2)
    if closed and colon is not None and _PLAIN_KEY.fullmatch(match.group(0)):
        return match.group(0)
    return b'"redacted"' + (colon or b"")


# An object key kept in a body that does not parse: a short identifier, which cannot spell an
# email address or a phone number, even through JSON escapes.
_PLAIN_KEY = re.compile(rb'"[A-Za-z_][A-Za-z0-9_.-]{0,63}"\s*:')
