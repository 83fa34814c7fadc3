"""CLI output: CSV cells safe for spreadsheets, one-line errors and plain help text."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from server import cli
from web_fixtures import event, insert_events, make_site, open_data_dir

FORMULA = '=HYPERLINK("http://evil.example","x")'


def test_cli_csv_prefixes_formulas(tmp_path: Path) -> None:
    directory, conn = open_data_dir(tmp_path / "data")
    site = make_site(conn, "csv.example")
    now = int(time.time() * 1000)
    insert_events(conn, [event(site, now, kind="custom", name=FORMULA, path="+cmd",
                               visitor_id="v1", session_id="s1")])
    day = time.strftime("%Y-%m-%d", time.gmtime(now / 1000))

    report = cli(directory.root, "report", "events", "--site", site.id, "--format", "csv",
                 "--from", day, "--to", day).stdout
    names = [row[0] for row in csv.reader(io.StringIO(report))][1:]
    assert names == ["'" + FORMULA]

    exported = cli(directory.root, "export", "--site", site.id, "--format", "csv",
                   "--from", day, "--to", day).stdout
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == 1
    assert rows[0]["name"] == "'" + FORMULA
    assert rows[0]["path"] == "'+cmd"


def test_cli_csv_keeps_plain_values(tmp_path: Path) -> None:
    directory, conn = open_data_dir(tmp_path / "data")
    site = make_site(conn, "plain.example")
    listed = cli(directory.root, "sites", "list", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(listed)))
    assert rows[0]["id"] == site.id
    assert rows[0]["domain"] == "plain.example"


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    directory, conn = open_data_dir(tmp_path / "data")
    site = make_site(conn, "errors.example")
    cases = [
        ("users", "add", "a@example.com", "--role", "boss"),
        ("report", "overview", "--site", site.id, "--format", "xml"),
        ("report", "overview", "--site", site.id, "--limit", "0"),
        ("report", "overview"),
        ("no-such-command",),
    ]
    for args in cases:
        result = cli(directory.root, *args, check=False)
        assert result.returncode != 0, args
        assert result.stdout == "", args
        lines = result.stderr.splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("Error: "), (args, result.stderr)


def test_unreachable_clickhouse_is_one_line(tmp_path: Path) -> None:
    directory, conn = open_data_dir(tmp_path / "data")
    site = make_site(conn, "ch.example")
    # Port 1 on loopback refuses connections.
    result = cli(directory.root, "report", "overview", "--site", site.id, "--store",
                 "clickhouse://127.0.0.1:1/trackpixel", check=False)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.stderr


def test_help_text_keeps_defaults(tmp_path: Path) -> None:
    result = cli(tmp_path, "report", "overview", "--help")
    text = " ".join(result.stdout.split())
    assert "config.toml ." not in text
    assert "time zone ." not in text
    assert "config.toml [default: ./trackpixel-" in text
    assert "time zone [default: 29 days ago]" in text


def test_quickstart_prints_runnable_commands(tmp_path: Path) -> None:
    # Run as `python -m trackpixel`, the printed commands use the bare program name.
    result = cli(tmp_path, "quickstart")
    lines = result.stdout.splitlines()
    assert any(line.startswith("trackpixel report overview --site s_") for line in lines)
    assert any("users add EMAIL --role admin" in line for line in lines)
    test_hit = next(line for line in lines if line.startswith("Pixel test: curl -A 'Mozilla/5.0"))
    # curl's own user agent would be counted as a bot, so the test hit names a browser's.
    assert "Chrome/" in test_hit


def test_cli_table_prints_tracked_text_literally(tmp_path: Path) -> None:
    directory, conn = open_data_dir(tmp_path / "data")
    site = make_site(conn, "markup.example")
    now = int(time.time() * 1000)
    paths = ["/a[/b]", "/[bold red]loud[/bold red]", "/bell\x07\x1b]0;title\x07\x1b[31m"]
    insert_events(conn, [event(site, now + index, path=path, visitor_id=f"v{index}",
                               session_id=f"s{index}", session_start=1)
                         for index, path in enumerate(paths)])
    day = time.strftime("%Y-%m-%d", time.gmtime(now / 1000))

    result = cli(directory.root, "report", "pages", "--site", site.id, "--from", day,
                 "--to", day, check=False)
    assert result.returncode == 0, result.stderr
    assert "/a[/b]" in result.stdout
    assert "/[bold red]loud[/bold red]" in result.stdout
    assert "/bell\\x07\\x1b]0;title\\x07\\x1b[31m" in result.stdout
    assert "\x1b" not in result.stdout
    assert "\x07" not in result.stdout
