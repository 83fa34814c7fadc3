"""Dashboard users: passwords, roles, site grants, browser sessions, API tokens, throttling.

Passwords are hashed with argon2id (argon2-cffi defaults). Session cookies and API tokens are
32 random bytes; the database stores only their SHA-256, so a copy of the database does not
let anyone log in. Failed logins are counted per email and client network (IPv4 /24, IPv6
/64), stored as a hash of both, so no raw address is kept.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from trackpixel.storage.sqlite import MAX_INTEGER

ROLES = ("admin", "viewer")
SESSION_COOKIE = "tp_session"
SESSION_TTL_MS = 7 * 24 * 3_600_000
TOKEN_PREFIX = "tpt_"
# Login throttling: this many failures for one email from one network within the window
# block further attempts until the oldest failure leaves the window.
MAX_FAILURES = 5
FAILURE_WINDOW_MS = 15 * 60_000
MIN_PASSWORD_CHARS = 10

_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_hasher = PasswordHasher()
# Verified against when the email is unknown, so a login for a missing user takes as long as
# one with a wrong password.
_DUMMY_HASH = _hasher.hash("not a real password")


class AuthError(Exception):
    """A user could not be created or changed; the message names the invalid value."""


@dataclass(frozen=True)
class User:
    id: int
    email: str
    role: str
    site_ids: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can_see(self, site_id: str) -> bool:
        return self.is_admin or site_id in self.site_ids


@dataclass(frozen=True)
class WebSession:
    user: User
    csrf_token: str


def now_ms() -> int:
    return int(time.time() * 1000)


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalize_email(email: str) -> str:
    value = email.strip().lower()
    if not _EMAIL_RE.match(value):
        raise AuthError(f"invalid email {email!r}: expected name@domain")
    return value


# Users

def add_user(conn: sqlite3.Connection, email: str, role: str, password: str | None,
             site_ids: tuple[str, ...] = ()) -> User:
    """Create a user; a viewer sees only ``site_ids``, an admin sees every site."""
    address = normalize_email(email)
    if role not in ROLES:
        raise AuthError(f"invalid role {role!r}: expected admin or viewer")
    if password is not None and len(password) < MIN_PASSWORD_CHARS:
        raise AuthError(f"password too short: use at least {MIN_PASSWORD_CHARS} characters")
    password_hash = _hasher.hash(password) if password is not None else None
    conn.execute("BEGIN IMMEDIATE")
    try:
        cursor = conn.execute(
            "INSERT INTO users (email, password_hash, role, created_ts) VALUES (?, ?, ?, ?)",
            (address, password_hash, role, now_ms()))
        user_id = int(cursor.lastrowid or 0)
        conn.executemany("INSERT OR IGNORE INTO user_sites VALUES (?, ?)",
                         [(user_id, site_id) for site_id in site_ids])
        conn.execute("COMMIT")
    except sqlite3.IntegrityError as exc:
        conn.execute("ROLLBACK")
        raise AuthError(f"a user with email {address!r} already exists") from exc
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return User(user_id, address, role, frozenset(site_ids))


def set_password(conn: sqlite3.Connection, email: str, password: str) -> int:
    """Set a user's password and end their browser sessions; return how many ended.

    API tokens stay valid: they are separate credentials, revoked with ``revoke_token``."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise AuthError(f"password too short: use at least {MIN_PASSWORD_CHARS} characters")
    user = find_user(conn, email)
    password_hash = _hasher.hash(password)
    with _transaction(conn):
        conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user.id))
        ended = conn.execute("DELETE FROM web_sessions WHERE user_id = ?", (user.id,)).rowcount
    return int(ended)


def remove_user(conn: sqlite3.Connection, email: str) -> tuple[int, int]:
    """Delete a user with their site grants, sessions and API tokens; return the numbers of
    sessions and tokens deleted."""
    user = find_user(conn, email)
    with _transaction(conn):
        sessions = conn.execute("DELETE FROM web_sessions WHERE user_id = ?",
                                (user.id,)).rowcount
        api_tokens = conn.execute("DELETE FROM api_tokens WHERE user_id = ?",
                                  (user.id,)).rowcount
        conn.execute("DELETE FROM user_sites WHERE user_id = ?", (user.id,))
        conn.execute("DELETE FROM users WHERE id = ?", (user.id,))
    return int(sessions), int(api_tokens)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def get_user(conn: sqlite3.Connection, user_id: int) -> User | None:
    row = conn.execute("SELECT id, email, role FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        return None
    sites = frozenset(site for (site,) in conn.execute(
        "SELECT site_id FROM user_sites WHERE user_id = ?", (user_id,)))
    return User(int(row[0]), str(row[1]), str(row[2]), sites)


def find_user(conn: sqlite3.Connection, email: str) -> User:
    row = conn.execute("SELECT id FROM users WHERE email = ?",
                       (normalize_email(email),)).fetchone()
    user = get_user(conn, int(row[0])) if row else None
    if user is None:
        raise AuthError(f"user {email!r} not found: run 'trackpixel users list'")
    return user


def list_users(conn: sqlite3.Connection) -> list[User]:
    ids = [int(row[0]) for row in conn.execute("SELECT id FROM users ORDER BY email")]
    return [user for user in (get_user(conn, user_id) for user_id in ids) if user]


def verify_password(conn: sqlite3.Connection, email: str, password: str) -> User | None:
    """Return the user when the password matches, else None; timing does not reveal which."""
    try:
        address = normalize_email(email)
    except AuthError:
        address = ""
    row = conn.execute("SELECT id, password_hash FROM users WHERE email = ?",
                       (address,)).fetchone()
    stored = str(row[1]) if row and row[1] else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or not row[1]:
        return None
    if _hasher.check_needs_rehash(stored):
        conn.execute("UPDATE users SET password_hash = ? WHERE id = ?",
                     (_hasher.hash(password), row[0]))
    return get_user(conn, int(row[0]))


# Login throttling

def client_network(address: str) -> str:
    """Return the /24 (IPv4) or /64 (IPv6) network of an address, or the value unchanged."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _failure_key(email: str, address: str) -> str:
    return hash_secret(f"{email.strip().lower()}\n{client_network(address)}")


def is_throttled(conn: sqlite3.Connection, email: str, address: str) -> bool:
    since = now_ms() - FAILURE_WINDOW_MS
    (count,) = conn.execute(
        "SELECT COUNT(*) FROM login_failures WHERE key_hash = ? AND ts > ?",
        (_failure_key(email, address), since)).fetchone()
    return int(count) >= MAX_FAILURES


def record_failure(conn: sqlite3.Connection, email: str, address: str) -> None:
    ts = now_ms()
    conn.execute("INSERT INTO login_failures VALUES (?, ?)", (_failure_key(email, address), ts))
    conn.execute("DELETE FROM login_failures WHERE ts <= ?", (ts - FAILURE_WINDOW_MS,))


def clear_failures(conn: sqlite3.Connection, email: str, address: str) -> None:
    conn.execute("DELETE FROM login_failures WHERE key_hash = ?", (_failure_key(email, address),))


# Browser sessions

def start_session(conn: sqlite3.Connection, user: User) -> str:
    """Store a new session for ``user`` and return the cookie value."""
    cookie = secrets.token_urlsafe(32)
    ts = now_ms()
    conn.execute("INSERT INTO web_sessions VALUES (?, ?, ?, ?, ?)",
                 (hash_secret(cookie), user.id, secrets.token_urlsafe(32), ts,
                  ts + SESSION_TTL_MS))
    conn.execute("DELETE FROM web_sessions WHERE expires_ts < ?", (ts,))
    return cookie


def load_session(conn: sqlite3.Connection, cookie: str) -> WebSession | None:
    row = conn.execute(
        "SELECT user_id, csrf_token FROM web_sessions WHERE id_hash = ? AND expires_ts > ?",
        (hash_secret(cookie), now_ms())).fetchone()
    if row is None:
        return None
    user = get_user(conn, int(row[0]))
    return WebSession(user, str(row[1])) if user else None


def end_session(conn: sqlite3.Connection, cookie: str) -> None:
    conn.execute("DELETE FROM web_sessions WHERE id_hash = ?", (hash_secret(cookie),))


# API tokens

def create_token(conn: sqlite3.Connection, user: User, label: str = "api") -> str:
    """Store a new API token for ``user`` and return it; only its hash is kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO api_tokens (user_id, token_hash, label, created_ts) VALUES (?, ?, ?, ?)",
        (user.id, hash_secret(token), label, now_ms()))
    return token


@dataclass(frozen=True)
class ApiToken:
    id: int
    label: str
    created_ts: int
    last_used_ts: int | None


def list_tokens(conn: sqlite3.Connection, user: User) -> list[ApiToken]:
    rows = conn.execute("SELECT id, label, created_ts, last_used_ts FROM api_tokens "
                        "WHERE user_id = ? ORDER BY created_ts DESC, id DESC", (user.id,))
    return [ApiToken(int(row[0]), str(row[1]), int(row[2]),
                     None if row[3] is None else int(row[3])) for row in rows]


def revoke_token(conn: sqlite3.Connection, user: User, token: int | str) -> bool:
    """Delete one of ``user``'s API tokens, given by its id or by the token itself; return
    False when the user has no such token."""
    if isinstance(token, int):
        if not 0 < token <= MAX_INTEGER:
            return False
        deleted = conn.execute("DELETE FROM api_tokens WHERE user_id = ? AND id = ?",
                               (user.id, token)).rowcount
    else:
        deleted = conn.execute("DELETE FROM api_tokens WHERE user_id = ? AND token_hash = ?",
                               (user.id, hash_secret(token))).rowcount
    return bool(deleted)


def user_for_token(conn: sqlite3.Connection, token: str) -> User | None:
    row = conn.execute("SELECT id, user_id FROM api_tokens WHERE token_hash = ?",
                       (hash_secret(token),)).fetchone()
    if row is None:
        return None
    conn.execute("UPDATE api_tokens SET last_used_ts = ? WHERE id = ?", (now_ms(), row[0]))
    return get_user(conn, int(row[1]))
