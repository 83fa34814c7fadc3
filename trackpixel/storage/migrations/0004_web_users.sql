-- Dashboard users, their site grants, browser sessions, API tokens and failed logins.
-- Secrets are stored only as hashes: argon2 for passwords, SHA-256 hex for random tokens.

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,         -- lower-cased
    password_hash TEXT,                 -- argon2id; NULL: the user cannot log in with a password
    role TEXT NOT NULL,                 -- 'admin' (every site, manages users) or 'viewer'
    created_ts INTEGER NOT NULL
);

CREATE TABLE user_sites (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    site_id TEXT NOT NULL,
    PRIMARY KEY (user_id, site_id)
) WITHOUT ROWID;

CREATE TABLE web_sessions (
    id_hash TEXT PRIMARY KEY,           -- SHA-256 hex of the cookie value
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,           -- random, sent in every form of this session
    created_ts INTEGER NOT NULL,
    expires_ts INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,    -- SHA-256 hex of the token
    label TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    last_used_ts INTEGER
);

CREATE TABLE login_failures (
    key_hash TEXT NOT NULL,             -- SHA-256 hex of the email and the client's network
    ts INTEGER NOT NULL
);

CREATE INDEX login_failures_key_ts ON login_failures (key_hash, ts);

