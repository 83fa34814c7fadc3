"""Dashboard and API access: passwords, throttling, CSRF, per-site access and API tokens."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
from server import Server, add_site, cli
from web_fixtures import PASSWORD, add_user, client, log_in, login_token, make_site, open_data_dir

from trackpixel.web import auth


def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    directory, conn = open_data_dir(tmp_path / "data")
    own = make_site(conn, "own.example")
    other = make_site(conn, "other.example")
    add_user(conn, "admin@example.com")
    add_user(conn, "viewer@example.com", "viewer", (own.id,))
    return directory, conn, own, other


def test_login_success_sets_cookie(tmp_path: Path) -> None:
    directory, _, _, _ = setup(tmp_path)
    response = log_in(client(directory), "admin@example.com")
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "tp_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http on loopback


def test_login_wrong_password(tmp_path: Path) -> None:
    directory, _, _, _ = setup(tmp_path)
    test_client = client(directory)
    response = log_in(test_client, "admin@example.com", "wrong password!")
    assert response.status_code == 401
    assert "Wrong email or password" in response.text
    assert test_client.get("/dashboard/overview", follow_redirects=False).status_code == 303


def test_login_throttled_after_five_failures(tmp_path: Path) -> None:
    directory, conn, _, _ = setup(tmp_path)
    test_client = client(directory)
    for _ in range(auth.MAX_FAILURES):
        assert log_in(test_client, "admin@example.com", "wrong password!").status_code == 401
    response = log_in(test_client, "admin@example.com", PASSWORD)
    assert response.status_code == 429
    stored = conn.execute("SELECT key_hash FROM login_failures").fetchall()
    assert len(stored) == auth.MAX_FAILURES
    assert all("127.0.0" not in row[0] and "testclient" not in row[0] for row in stored)
    # Another email from the same network is not blocked.
    assert log_in(test_client, "viewer@example.com").status_code == 303


def test_login_csrf_missing_or_invalid(tmp_path: Path) -> None:
    directory, _, _, _ = setup(tmp_path)
    test_client = client(directory)
    login_token(test_client)
    data = {"email": "admin@example.com", "password": PASSWORD}
    assert test_client.post("/dashboard/login", data=data).status_code == 403
    invalid = test_client.post("/dashboard/login", data=data | {"csrf_token": "forged"})
    assert invalid.status_code == 403


def test_logged_in_forms_need_session_token(tmp_path: Path) -> None:
    directory, _, _, _ = setup(tmp_path)
    test_client = client(directory)
    assert log_in(test_client, "admin@example.com").status_code == 303
    assert test_client.post("/dashboard/tokens", data={"label": "x"}).status_code == 403
    forged = test_client.post("/dashboard/tokens", data={"label": "x", "csrf_token": "nope"})
    assert forged.status_code == 403
    login_value = test_client.cookies.get("tp_login_csrf")
    reused = test_client.post("/dashboard/tokens", data={"label": "x",
                                                          "csrf_token": login_value})
    assert reused.status_code == 403
    cross_origin = test_client.post("/dashboard/logout", data={"csrf_token": "x"},
                                    headers={"Origin": "http://evil.example"})
    assert cross_origin.status_code == 403


def test_viewer_cannot_see_other_site(tmp_path: Path) -> None:
    directory, _conn, own, other = setup(tmp_path)
    test_client = client(directory)
    assert log_in(test_client, "viewer@example.com").status_code == 303
    assert test_client.get(f"/dashboard/overview?site={own.id}").status_code == 200
    page = test_client.get(f"/dashboard/overview?site={other.id}")
    assert page.status_code == 404
    assert "other.example" not in test_client.get("/dashboard/overview").text
    api = test_client.get(f"/api/v1/reports/overview?site={other.id}")
    assert api.status_code == 404
    assert api.json()["error"]["code"] == "site_not_found"


def test_api_token_auth(tmp_path: Path) -> None:
    directory, conn, own, _ = setup(tmp_path)
    viewer = auth.find_user(conn, "viewer@example.com")
    token = auth.create_token(conn, viewer)
    test_client = client(directory)
    missing = test_client.get("/api/v1/reports/overview")
    assert missing.status_code == 401
    assert set(missing.json()["error"]) == {"code", "message"}
    wrong = test_client.get("/api/v1/reports/overview",
                            headers={"Authorization": "Bearer tpt_wrong"})
    assert wrong.status_code == 401
    good = test_client.get("/api/v1/reports/overview",
                           headers={"Authorization": f"Bearer {token}"})
    assert good.status_code == 200
    assert good.json()["site"] == own.id
    stored = conn.execute("SELECT token_hash FROM api_tokens").fetchone()[0]
    assert token not in stored


def test_api_errors_share_one_shape(tmp_path: Path) -> None:
    directory, conn, _, _ = setup(tmp_path)
    token = auth.create_token(conn, auth.find_user(conn, "admin@example.com"))
    test_client = client(directory)
    test_client.headers["Authorization"] = f"Bearer {token}"
    unknown = test_client.get("/api/v1/reports/nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "report_not_found"
    bad_day = test_client.get("/api/v1/reports/pages?from=yesterday")
    assert bad_day.status_code == 400
    assert bad_day.json()["error"]["details"] == {"param": "from"}
    bad_filter = test_client.get("/api/v1/reports/pages?prop=noequals")
    assert bad_filter.json()["error"]["details"] == {"param": "prop"}


def test_openapi_document(tmp_path: Path) -> None:
    directory, _, _, _ = setup(tmp_path)
    document = client(directory).get("/api/v1/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    parameters = document["paths"]["/api/v1/reports/{report}"]["get"]["parameters"]
    assert "funnel" in parameters[0]["schema"]["enum"]
    assert {"site", "from", "to", "format", "country", "prop"} <= {p["name"] for p in parameters}


def test_cli_users_and_token(tmp_path: Path) -> None:
    data_dir = tmp_path / "cli"
    data_dir.mkdir()
    cli(data_dir, "sites", "add", "cli.example")
    env_args = [sys.executable, "-m", "trackpixel", "users", "add", "ops@example.com",
                "--role", "viewer", "--site", "cli.example", "--password-stdin"]
    added = subprocess.run(env_args, input=PASSWORD + "\n", capture_output=True, text=True,
                           env={"TRACKPIXEL_DATA_DIR": str(data_dir), "PATH": "/usr/bin"},
                           timeout=60)
    assert added.returncode == 0, added.stderr
    listed = cli(data_dir, "users", "list", "--format", "csv").stdout
    assert "ops@example.com,viewer," in listed
    token = cli(data_dir, "users", "token", "ops@example.com").stdout.strip()
    assert token.startswith("tpt_")
    short = subprocess.run([*env_args[:5], "short@example.com", *env_args[6:]],
                           input="short\n", capture_output=True, text=True,
                           env={"TRACKPIXEL_DATA_DIR": str(data_dir)}, timeout=60)
    assert short.returncode == 1
    assert "password too short" in short.stderr


PROXY_HEADERS = {"Host": "t.example.com", "X-Forwarded-Proto": "https",
                 "X-Forwarded-For": "203.0.113.9", "Origin": "https://t.example.com"}


def _login_through_proxy(base: str, headers: dict[str, str]) -> httpx.Response:
    """Log in as a TLS-terminating proxy would forward it: plain HTTP with proxy headers."""
    page = httpx.get(f"{base}/dashboard/login", headers=headers)
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    login_cookie = page.cookies.get("tp_login_csrf") or ""
    return httpx.post(f"{base}/dashboard/login", headers={
        **headers, "Cookie": f"tp_login_csrf={login_cookie}"}, data={
        "email": "admin@example.com", "password": PASSWORD, "csrf_token": token.group(1)})


def _serve_with_admin(tmp_path: Path, *extra: str) -> Server:
    data = tmp_path / "data"
    data.mkdir()
    add_site(data, "localhost")
    subprocess.run([sys.executable, "-m", "trackpixel", "users", "add", "admin@example.com",
                    "--role", "admin", "--password-stdin", "--data-dir", str(data)],
                   input=PASSWORD + "\n", text=True, check=True, capture_output=True)
    return Server(data, extra=extra).start()


def test_login_behind_https_proxy(tmp_path: Path) -> None:
    server = _serve_with_admin(tmp_path)
    try:
        response = _login_through_proxy(server.base, PROXY_HEADERS)
        assert response.status_code == 303, response.text
        session_cookie = response.headers["set-cookie"]
        assert session_cookie.startswith("tp_session=")
        assert "Secure" in session_cookie

        forwarded = {"Host": "127.0.0.1", "Origin": "https://t.example.com",
                     "Forwarded": "for=203.0.113.9;proto=https;host=t.example.com"}
        assert _login_through_proxy(server.base, forwarded).status_code == 303

        # Without the proxy headers the login form works over plain HTTP and sets no Secure.
        plain = _login_through_proxy(server.base, {"Origin": server.base})
        assert plain.status_code == 303
        assert "Secure" not in plain.headers["set-cookie"]
    finally:
        server.stop()


def test_proxy_headers_from_untrusted_peer(tmp_path: Path) -> None:
    server = _serve_with_admin(tmp_path, "--forwarded-allow-ips", "192.0.2.1")
    try:
        response = _login_through_proxy(server.base, PROXY_HEADERS)
        assert response.status_code == 403
        assert "expected &#39;http://t.example.com&#39;" in response.text
    finally:
        server.stop()


def test_forwarded_allow_ips_invalid(tmp_path: Path) -> None:
    result = cli(tmp_path, "serve", "--forwarded-allow-ips", "10.0.0.0/33", check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "Error: invalid address or network '10.0.0.0/33' in the forwarded-allow-ips list: "
        "expected e.g. 127.0.0.1,10.0.0.0/8 or *"]


class Browser:
    """A logged-in dashboard client of a running server, with its cookies."""

    def __init__(self, server: Server, email: str = "admin@example.com") -> None:
        self.http = httpx.Client(base_url=server.base)
        page = self.http.get("/dashboard/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None
        response = self.http.post("/dashboard/login", data={
            "email": email, "password": PASSWORD, "csrf_token": token.group(1)})
        assert response.status_code == 303, response.text

    def logged_in(self) -> bool:
        return self.http.get("/dashboard/overview").status_code == 200

    def form_token(self) -> str:
        page = self.http.get("/dashboard/tokens")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token is not None, page.text
        return token.group(1)


def _api_status(server: Server, token: str) -> int:
    return httpx.get(f"{server.base}/api/v1/reports/overview",
                     headers={"Authorization": f"Bearer {token}"}).status_code


def _set_password(data: Path, email: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trackpixel", "users", "password", email,
                           "--password-stdin", "--data-dir", str(data)],
                          input=password + "\n", text=True, capture_output=True, check=True)


def test_password_change_ends_sessions(tmp_path: Path) -> None:
    server = _serve_with_admin(tmp_path)
    try:
        browser = Browser(server)
        assert browser.logged_in()
        token = cli(server.data_dir, "users", "token", "admin@example.com").stdout.strip()

        changed = _set_password(server.data_dir, "admin@example.com", "another long password")

        assert "1 session(s) ended" in changed.stdout
        assert not browser.logged_in()
        assert _api_status(server, token) == 200  # tokens are separate credentials
    finally:
        server.stop()


def test_users_remove_ends_access(tmp_path: Path) -> None:
    server = _serve_with_admin(tmp_path)
    try:
        browser = Browser(server)
        token = cli(server.data_dir, "users", "token", "admin@example.com").stdout.strip()
        assert _api_status(server, token) == 200

        removed = cli(server.data_dir, "users", "remove", "admin@example.com")

        assert removed.stdout.strip() == ("removed admin@example.com: 1 session(s) ended, "
                                          "1 API token(s) revoked")
        assert not browser.logged_in()
        assert _api_status(server, token) == 401
        listed = cli(server.data_dir, "users", "list", "--format", "json").stdout
        assert "admin@example.com" not in listed
        missing = cli(server.data_dir, "users", "remove", "admin@example.com", check=False)
        assert missing.returncode == 1
        assert missing.stderr.startswith("Error: user 'admin@example.com' not found")
    finally:
        server.stop()


def test_cli_revoke_token(tmp_path: Path) -> None:
    server = _serve_with_admin(tmp_path)
    try:
        data = server.data_dir
        first = cli(data, "users", "token", "admin@example.com", "--label", "first").stdout
        second = cli(data, "users", "token", "admin@example.com", "--label", "second").stdout
        third = cli(data, "users", "token", "admin@example.com", "--label", "third").stdout
        listed = json.loads(cli(data, "users", "tokens", "admin@example.com", "--format",
                                "json").stdout)
        ids = {row["label"]: row["id"] for row in listed}
        assert set(ids) == {"first", "second", "third"}

        cli(data, "users", "revoke-token", "admin@example.com", str(ids["first"]))
        cli(data, "users", "revoke-token", "admin@example.com", second.strip())

        assert _api_status(server, first.strip()) == 401
        assert _api_status(server, second.strip()) == 401
        assert _api_status(server, third.strip()) == 200
        again = cli(data, "users", "revoke-token", "admin@example.com", str(ids["first"]),
                    check=False)
        assert again.returncode == 1
        assert again.stderr.startswith(f"Error: admin@example.com has no API token "
                                       f"{ids['first']}:")
        by_value = cli(data, "users", "revoke-token", "admin@example.com", second.strip(),
                       check=False)
        assert by_value.returncode == 1
        assert by_value.stderr.startswith("Error: admin@example.com has no such API token")
        assert second.strip() not in by_value.stderr
        too_large = cli(data, "users", "revoke-token", "admin@example.com", str(2**63),
                        check=False)
        assert too_large.returncode == 1
        assert too_large.stderr.startswith(f"Error: admin@example.com has no API token {2**63}:")
    finally:
        server.stop()


def test_dashboard_revokes_token(tmp_path: Path) -> None:
    server = _serve_with_admin(tmp_path)
    try:
        browser = Browser(server)
        created = browser.http.post("/dashboard/tokens", data={
            "label": "ci", "csrf_token": browser.form_token()})
        token = re.search(r'id="new-token">([^<]+)<', created.text)
        assert token is not None
        assert _api_status(server, token.group(1)) == 200
        token_id = re.search(r'name="token_id" value="(\d+)"', created.text)
        assert token_id is not None

        forged = browser.http.post("/dashboard/tokens", data={
            "action": "revoke", "token_id": token_id.group(1), "csrf_token": "forged"})
        assert forged.status_code == 403
        assert _api_status(server, token.group(1)) == 200

        revoked = browser.http.post("/dashboard/tokens", data={
            "action": "revoke", "token_id": token_id.group(1),
            "csrf_token": browser.form_token()})
        assert revoked.status_code == 303
        assert _api_status(server, token.group(1)) == 401
        assert 'name="token_id"' not in browser.http.get("/dashboard/tokens").text

        missing = browser.http.post("/dashboard/tokens", data={
            "action": "revoke", "token_id": token_id.group(1),
            "csrf_token": browser.form_token()})
        assert missing.status_code == 404
    finally:
        server.stop()


def test_proxy_x_headers_win_over_forwarded() -> None:
    from trackpixel.web.proxy import _forwarded_values

    # The documented proxy overwrites the X- headers; a client's Forwarded may pass through.
    headers = [(b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"t.example.com"),
               (b"forwarded", b"proto=http;host=evil.example")]
    assert _forwarded_values(headers) == ("https", "t.example.com")
    assert _forwarded_values([(b"forwarded", b'for=1.2.3.4;proto=https;host="t.example.com"')]
                             ) == ("https", "t.example.com")
