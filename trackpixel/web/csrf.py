"""CSRF protection for the dashboard's forms.

Every state-changing request is a POST carrying a ``csrf_token`` form field. A logged-in
user's token is stored with their session. The login form, used before any session exists,
uses a double-submit token: a random cookie whose value the form must repeat. A POST whose
``Origin`` header names another origin is rejected before the token is checked.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request

LOGIN_COOKIE = "tp_login_csrf"
FIELD = "csrf_token"


class CsrfError(Exception):
    """The CSRF token is missing or wrong, or the request came from another origin."""


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def check_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None:
        return
    expected = f"{request.url.scheme}://{request.url.netloc}"
    if origin != expected:
        raise CsrfError(f"request from origin {origin!r} rejected: expected {expected!r}")


def check_token(submitted: object, expected: str | None) -> None:
    """Raise ``CsrfError`` unless ``submitted`` equals the non-empty ``expected`` token."""
    if not isinstance(submitted, str) or not submitted:
        raise CsrfError("missing CSRF token: reload the page and submit the form again")
    if not expected or not hmac.compare_digest(submitted.encode(), expected.encode()):
        raise CsrfError("invalid CSRF token: reload the page and submit the form again")
