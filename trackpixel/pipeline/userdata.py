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

from trackpixel.pipeline.fields import InvalidField

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
