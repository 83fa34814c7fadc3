"""The ``trackpixel`` command line."""

from __future__ import annotations

import csv
import functools
import io
import logging
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import orjson
import typer
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from trackpixel import logs, tokens
from trackpixel.config import ConfigError, DataDir, resolve_data_dir
from trackpixel.csvfile import write_csv
from trackpixel.reports import run as reports
from trackpixel.reports.queries import ReportQuery
from trackpixel.sites import Site, SiteError, add_site, get_site, list_sites
from trackpixel.storage.records import EventStore
from trackpixel.storage.sqlite import SqliteStore, connect, migrate
from trackpixel.web.reports import FILTERS, REPORTS, ParamError, ReportSpec, parse_request


def _typer(help_text: str) -> typer.Typer:
    """Create a command group with plain click help and errors. With rich markup, help text
    such as "[default: ...]" is read as a markup tag and dropped, and usage errors are drawn
    as boxed panels."""
    return typer.Typer(help=help_text, no_args_is_help=True, add_completion=False,
                       rich_markup_mode=None, pretty_exceptions_enable=False)


app = _typer("Self-hosted tracking pixel and conversion measurement server.")
sites_app = _typer("Add and list tracked sites.")
report_app = _typer("Print reports as a table, JSON or CSV.")
app.add_typer(sites_app, name="sites")
app.add_typer(report_app, name="report")
users_app = _typer("Add, list and remove dashboard users and their API tokens.")
app.add_typer(users_app, name="users")
rollups_app = _typer("Maintain the report rollups of the SQLite store.")
app.add_typer(rollups_app, name="rollups")

# soft_wrap: long lines (signed URLs, tags, errors) are printed whole, never broken at the
# terminal width, so they can be copied.
console = Console(soft_wrap=True)
error_console = Console(stderr=True, soft_wrap=True)

PUBLIC_URL_ENV = "TRACKPIXEL_PUBLIC_URL"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"

DataDirOption = Annotated[str | None, typer.Option(
    "--data-dir", envvar="TRACKPIXEL_DATA_DIR", show_envvar=True,
    help="Data directory holding the database, spools, secret and config.toml "
         "[default: ./trackpixel-data].")]
def _check_collector(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise typer.BadParameter(f"{value!r} must start with http:// or https://, "
                                 "e.g. https://t.example.com")
    return value.rstrip("/")


CollectorOption = Annotated[str, typer.Option(
    "--collector", envvar=PUBLIC_URL_ENV, show_envvar=True, callback=_check_collector,
    help="Public base URL of the collector, as browsers and mail clients reach it.")]
SiteOption = Annotated[str, typer.Option("--site", help="Site id or domain.")]


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class ExportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


class CliError(Exception):
    pass


F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn expected failures into one ``Error: ...`` line and exit status 1."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (CliError, SiteError, ConfigError, ValueError, tokens.BadToken) as exc:
            # ValueError covers PrivacySettingsError and RightsError.
            error_console.print(f"Error: {exc}", markup=False, highlight=False)
            raise typer.Exit(1) from None
    return wrapper  # type: ignore[return-value]


def _open(data_dir: str | None, *, create: bool = False) -> tuple[DataDir, SqliteStore]:
    """Open the data directory's store. Only commands that set one up may ``create`` it, so a
    mistyped --data-dir is an error, not a new store with a new signing secret."""
    directory = resolve_data_dir(data_dir)
    if not create and not directory.db_path.exists():
        raise CliError(f"no trackpixel data directory at {directory.root}: pass --data-dir "
                       "(or set TRACKPIXEL_DATA_DIR), or create one with 'trackpixel quickstart' "
                       "or 'trackpixel sites add DOMAIN'")
    directory.ensure()
    return directory, SqliteStore(directory.db_path)


StoreOption = Annotated[str | None, typer.Option(
    "--store", envvar="TRACKPIXEL_STORE", show_envvar=True,
    help="Event store: 'sqlite' (trackpixel.db in the data directory) or "
         "'clickhouse://HOST:PORT/DATABASE' [default: store in config.toml, else sqlite].")]


def _open_events(directory: DataDir, state: SqliteStore, store: str | None) -> EventStore:
    """Open the event store chosen by ``--store`` or config.toml (``state`` for SQLite)."""
    from trackpixel.storage.backends import open_event_store, resolve_store_url
    from trackpixel.storage.records import StoreUnavailable

    if (os.environ.get(logs.LEVEL_ENV) or "").upper() != "DEBUG":
        # clickhouse_driver logs a warning with a traceback for each failed connection. The
        # CLI reports the failure in its one Error: line instead.
        logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)
    try:
        return open_event_store(resolve_store_url(directory, store), state)
    except StoreUnavailable as exc:
        raise CliError(f"{exc}; check that ClickHouse is running and --store is right") from None


# serve / process

@app.command()
@handle_errors
def serve(
    data_dir: DataDirOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Collector worker processes.")] = 1,
    processor: Annotated[bool, typer.Option(
        help="Also run the processor that turns spooled hits into events.")] = True,
    store: StoreOption = None,
    forwarded_allow_ips: Annotated[str, typer.Option(
        envvar="TRACKPIXEL_FORWARDED_ALLOW_IPS", show_envvar=True,
        help="Comma-separated proxy addresses or networks whose X-Forwarded-Proto, "
             "X-Forwarded-Host and Forwarded headers set the dashboard's scheme and host, "
             "or * for every peer; trusted_proxies in config.toml are added.")]
    = "127.0.0.1",
) -> None:
    """Run the collector (pixel, beacon, snippet, redirects, API) and the processor."""
    from trackpixel.serve import serve as run_server
    from trackpixel.web.proxy import FORWARDED_ALLOW_IPS_ENV, parse_allow_ips

    parse_allow_ips(forwarded_allow_ips)  # raises ValueError, printed as an Error: line
    os.environ[FORWARDED_ALLOW_IPS_ENV] = forwarded_allow_ips
    _check_port_free(host, port)
    from trackpixel.storage.backends import resolve_store_url

    logs.configure()
    directory = resolve_data_dir(data_dir)
    run_server(directory, host, port, workers, with_processor=processor,
               store_url=resolve_store_url(directory, store))


def _check_port_free(host: str, port: int) -> None:
    """Fail when another process listens on the port. granian binds with SO_REUSEPORT, so a
    second server would otherwise start and silently take part of the traffic."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR lets the probe bind while only TIME-WAIT connections of an earlier
        # server remain. A socket that listens on the port still makes the bind fail.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}; is another "
                           "server running? Stop it or choose --port") from None


@app.command()
@handle_errors
def process(
    data_dir: DataDirOption = None,
    once: Annotated[bool, typer.Option(help="Drain the spools, then exit.")] = False,
    store: StoreOption = None,
) -> None:
    """Run only the processor: spooled hits to enriched events."""
    from trackpixel.pipeline.processor import Processor

    logs.configure()
    directory, state = _open(data_dir)
    worker = Processor(directory, state, _open_events(directory, state, store))
    if once:
        while worker.drain_once():
            pass
        worker.close()
        console.print(f"stored {worker.totals.events} events, rejected {worker.totals.rejected}")
        return
    stop = threading.Event()
    try:
        worker.run(stop)
    except KeyboardInterrupt:
        stop.set()


# sites

@sites_app.command("add")
@handle_errors
def sites_add(
    domain: Annotated[str, typer.Argument(help="The site's main domain, e.g. example.com.")],
    data_dir: DataDirOption = None,
    timezone: Annotated[str, typer.Option(help="IANA time zone for report days.")] = "UTC",
    also: Annotated[list[str] | None, typer.Option(
        "--also", help="Another allowed domain (repeatable); subdomains are always allowed.")]
    = None,
    cookies: Annotated[bool, typer.Option(
        help="Allow a first-party visitor cookie; without it visitors are counted by a "
             "daily-rotating hash.")] = True,
    output: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Add a site and print its id and server API key (shown only once)."""
    _, store = _open(data_dir, create=True)
    site, api_key = add_site(store.conn, domain, timezone=timezone,
                             extra_domains=tuple(also or ()), cookies=cookies)
    record = {**_site_record(site), "api_key": api_key}
    if output is OutputFormat.json:
        sys.stdout.write(orjson.dumps(record).decode() + "\n")
        return
    for key, value in record.items():
        console.print(f"{key:16} {value}", markup=False, highlight=False)
    console.print("Keep the API key now: only its hash is stored.", style="yellow")


@sites_app.command("list")
@handle_errors
def sites_list(
    data_dir: DataDirOption = None,
    output: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """List sites with their ids, domains and time zones."""
    _, store = _open(data_dir)
    records = [_site_record(site) for site in list_sites(store.conn)]
    columns = ["id", "domain", "allowed_domains", "timezone", "cookies"]
    _print_table(reports.Table("Sites", columns, [[r[c] for c in columns] for r in records]),
                 output)


def _site_record(site: Site) -> dict[str, Any]:
    return {"id": site.id, "domain": site.domain,
            "allowed_domains": ",".join(site.allowed_domains),
            "timezone": site.timezone, "cookies": site.cookies}


# tags and links

@app.command()
@handle_errors
def snippet(site: SiteOption, data_dir: DataDirOption = None,
            collector: CollectorOption = DEFAULT_PUBLIC_URL) -> None:
    """Print the HTML to paste into every page of a site, with its no-JavaScript fallback."""
    _, store = _open(data_dir)
    found = get_site(store.conn, site)
    sys.stdout.write(snippet_html(found.id, collector.rstrip("/")))


def snippet_html(site_id: str, base: str) -> str:
    return (
        "<script>window.trackpixel=window.trackpixel||function(){"
        "(trackpixel.q=trackpixel.q||[]).push(arguments)};</script>\n"
        f'<script async src="{base}/t.js" data-site="{site_id}"></script>\n'
        f'<noscript><img src="{base}/p.gif?s={site_id}" width="1" height="1" alt="" '
        'style="position:absolute;left:-9999px" referrerpolicy="no-referrer-when-downgrade">'
        "</noscript>\n"
    )


@app.command("email-pixel")
@handle_errors
def email_pixel(
    site: SiteOption,
    campaign: Annotated[str, typer.Option(help="Campaign name or id.")],
    recipient: Annotated[str | None, typer.Option(
        help="Opaque recipient id (stored hashed). Without it, opens are counted per campaign "
             "only.")] = None,
    recipients: Annotated[Path | None, typer.Option(
        help="File with one recipient id per line (or a CSV whose first column is the id): "
             "prints a CSV of recipient,pixel_url to import into your email service as a "
             "custom field. An id starting with =, +, -, @, a tab or a carriage return is "
             "written with a leading ' so that spreadsheets do not run it as a formula.")]
    = None,
    data_dir: DataDirOption = None,
    collector: CollectorOption = DEFAULT_PUBLIC_URL,
) -> None:
    """Print an <img> tag that records opens of a campaign, or signed pixel URLs per recipient.

    The signature covers site, campaign and recipient, so an open cannot be forged for another
    recipient; a merge tag inside a signed URL would break it, hence one URL per recipient."""
    if recipient and recipients:
        raise CliError("give --recipient or --recipients, not both")
    if not campaign.strip():
        raise CliError("--campaign is empty: give the campaign's name or id")
    directory, store = _open(data_dir)
    found = get_site(store.conn, site)
    base = collector.rstrip("/")
    secret = directory.secret()

    def pixel_url(recipient_id: str | None) -> str:
        payload = {"s": found.id, "cmp": campaign}
        if recipient_id:
            payload["r"] = recipient_id
        return f"{base}/o/{tokens.sign(secret, 'open', payload)}.gif"

    if recipients is None:
        sys.stdout.write(f'<img src="{pixel_url(recipient)}" width="1" height="1" alt="" '
                         'style="display:block;border:0">\n')
        return
    try:
        # utf-8-sig drops the byte order mark that spreadsheet programs write at the start.
        lines = recipients.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise CliError(f"cannot read {recipients}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"cannot read {recipients}: byte {exc.start} is not UTF-8; save the "
                       "file as UTF-8 text") from None
    recipient_ids = [row[0].strip() for row in csv.reader(lines) if row]
    write_csv(sys.stdout, ["recipient", "pixel_url"],
              [[recipient_id, pixel_url(recipient_id)] for recipient_id in recipient_ids
               if recipient_id and recipient_id.lower() not in ("recipient", "id")])


@app.command()
@handle_errors
def link(
    destination: Annotated[str, typer.Argument(help="The http or https URL to redirect to.")],
    site: SiteOption,
    campaign: Annotated[str | None, typer.Option(help="Campaign name or id.")] = None,
    creative: Annotated[str | None, typer.Option(help="Ad creative.")] = None,
    placement: Annotated[str | None, typer.Option(help="Ad placement.")] = None,
    recipient: Annotated[str | None, typer.Option(
        help="Opaque email recipient id, stored hashed. Not a merge tag: it is signed into "
             "the link, so sign one link per recipient.")]
    = None,
    channel: Annotated[str | None, typer.Option(
        help="Channel to record, e.g. email or display; default: from the URL's UTM tags.")]
    = None,
    data_dir: DataDirOption = None,
    collector: CollectorOption = DEFAULT_PUBLIC_URL,
) -> None:
    """Print a tracked link that records the click and redirects to DESTINATION.

    DESTINATION is stored as a browser sends it: the host IDNA-encoded, other non-ASCII
    characters and spaces percent-encoded."""
    from trackpixel.links import normalize_destination

    normalized = normalize_destination(destination)  # InvalidDestination is a ValueError
    directory, store = _open(data_dir)
    found = get_site(store.conn, site)
    payload = {"s": found.id, "d": normalized, "cmp": campaign, "crv": creative,
               "plc": placement, "r": recipient, "ch": channel}
    token = tokens.sign(directory.secret(), "click",
                        {key: value for key, value in payload.items() if value})
    sys.stdout.write(f"{collector.rstrip('/')}/c/{token}\n")


# reports

def _query(store: SqliteStore, site: str, from_day: str | None, to_day: str | None,
           limit: int) -> tuple[Site, ReportQuery]:
    found = get_site(store.conn, site)
    default_from, default_to = reports.default_range(found)
    start = _check_day(from_day or default_from, "--from")
    end = _check_day(to_day or default_to, "--to")
    if start > end:
        raise CliError(f"--from {start} is after --to {end}")
    return found, ReportQuery(found.id, start, end, limit=limit)


def _check_day(value: str, option: str) -> str:
    from trackpixel.web.reports import check_report_day, parse_day

    try:
        day = parse_day(value)
    except ValueError:
        raise CliError(f"{option} {value!r} is not a valid date; use YYYY-MM-DD, "
                       "e.g. 2026-11-30") from None
    try:
        check_report_day(day, option)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return day.isoformat()


FromOption = Annotated[str | None, typer.Option(
    "--from", help="First day, YYYY-MM-DD in the site's time zone [default: 29 days ago].")]
ToOption = Annotated[str | None, typer.Option(
    "--to", help="Last day, inclusive [default: today].")]
FormatOption = Annotated[OutputFormat, typer.Option("--format")]
LimitOption = Annotated[int | None, typer.Option(
    min=1, help="Maximum number of rows to show [default: 50].")]


FilterOption = Annotated[list[str] | None, typer.Option(
    "--filter", help="Filter as NAME=VALUE, as in the report API: channel, campaign, device, "
                     "country, page, browser, os, utm_source, utm_medium, referrer, event, or "
                     "prop=KEY=VALUE for a custom-event property. Repeat for more.")]
GoalOption = Annotated[str | None, typer.Option(
    "--goal", help="Count only this custom event as a conversion (overview, timeseries, "
                   "channels, referrers, utm, ads).")]
IntervalOption = Annotated[str | None, typer.Option(
    "--interval", help="Bucket of the timeseries report: hour, day or week [default: day].")]
StepOption = Annotated[list[str] | None, typer.Option(
    "--step", help="Funnel step in order, event:NAME or page:/PATH, optionally followed by "
                   "|KEY=VALUE; repeat for each step.")]
WindowOption = Annotated[int | None, typer.Option(
    "--window-hours", help="Hours after a funnel's first step within which later steps "
                           "count [default: 24].")]
PropEventOption = Annotated[str | None, typer.Option(
    "--prop-event", help="Event name whose properties the event_properties report lists.")]


def _report_params(from_day: str | None, to_day: str | None, limit: int | None,
                   filters: list[str], options: dict[str, Any]) -> dict[str, str]:
    """Return the report API's query parameters for the command line's options."""
    params = {name: str(value) for name, value in (("from", from_day), ("to", to_day),
                                                   ("limit", limit), *options.items())
              if value is not None}
    for text in filters:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise CliError(f"--filter {text!r} must look like NAME=VALUE, e.g. country=NZ")
        if name not in FILTERS:
            raise CliError(f"--filter {name} is not a filter; filters are {', '.join(FILTERS)}")
        if name in params:
            raise CliError(f"--filter {name} is given twice")
        params[name] = value
    return params


def _add_report_command(spec: ReportSpec) -> None:
    @report_app.command(spec.name, help=spec.description)
    @handle_errors
    def command(site: SiteOption, data_dir: DataDirOption = None,
                from_day: FromOption = None, to_day: ToOption = None,
                output: FormatOption = OutputFormat.table, limit: LimitOption = None,
                filters: FilterOption = None, goal: GoalOption = None,
                interval: IntervalOption = None, steps: StepOption = None,
                window_hours: WindowOption = None, prop_event: PropEventOption = None,
                store: StoreOption = None) -> None:
        options = {"goal": goal, "interval": interval, "window_hours": window_hours,
                   "prop_event": prop_event, "step": steps or None}
        for name, value in options.items():
            if value is not None and name not in spec.options:
                raise CliError(f"--{name.replace('_', '-')} does not apply to the "
                               f"{spec.name} report")
        del options["step"]
        directory, state = _open(data_dir)
        found = get_site(state.conn, site)
        params = _report_params(from_day and _check_day(from_day, "--from"),
                                to_day and _check_day(to_day, "--to"), limit, filters or [],
                                options)
        try:
            request = parse_request(found, params, steps or [])
            # The command line is for operators of the data directory, who see every site.
            table = spec.run(_open_events(directory, state, store), found,
                             replace(request, unattributed=True))
        except ParamError as exc:
            raise CliError(str(exc)) from None
        _print_table(table, output)


for _spec in REPORTS.values():
    _add_report_command(_spec)


# copying a store

@app.command("migrate")
@handle_errors
def migrate_store(
    source: Annotated[str, typer.Option(
        "--from", help="Store to copy from: 'sqlite:PATH' (a trackpixel.db file).")],
    target: Annotated[str, typer.Option(
        "--to", help="Store to copy into: 'clickhouse://HOST:PORT/DATABASE'.")],
    batch_rows: Annotated[int, typer.Option(
        min=1, help="Events read and inserted per step.")] = 50_000,
) -> None:
    """Copy events and rejected hits from SQLite into ClickHouse, resumably.

    Progress is checkpointed by the last copied ``events.id`` in ClickHouse, so a copy that
    stops part-way continues where it stopped when run again.
    """
    from trackpixel.storage.copy import copy_store

    logs.configure()
    copy_store(source, target, batch_rows=batch_rows, console=error_console)


@rollups_app.command("rebuild")
@handle_errors
def rollups_rebuild(
    site: Annotated[str | None, typer.Option(
        "--site", help="Site id or domain to rebuild [default: every site].")] = None,
    columns_only: Annotated[bool, typer.Option(
        "--columns-only", help="Rebuild only the column copy that filtered reports read, "
        "for every site.")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Recompute the report rollups from the stored raw events.

    Run it after upgrading a database that already had events, or to repair the rollups.
    Each site is rebuilt in one transaction, which blocks the processor's writes meanwhile.
    Days whose raw events retention has deleted lose their rollups too. With
    --columns-only, one transaction rebuilds the column copy of every site, which is
    enough after an upgrade that added only the copy.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from trackpixel.storage import rollups

    logs.configure()
    _, store = _open(data_dir)
    if columns_only:
        if site:
            raise typer.BadParameter("--columns-only rebuilds every site; leave out --site")
        try:
            (total,) = store.conn.execute("SELECT COUNT(*) FROM events").fetchone()
            with Progress("[progress.description]{task.description}", BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(),
                          console=error_console) as bar:
                task = bar.add_task("events", total=total)
                done = rollups.fill_columns(
                    store.conn, progress=lambda count: bar.update(task, completed=count))
        finally:
            store.close()
        console.print(f"copied {done} events into the column copy")
        return
    try:
        targets = [get_site(store.conn, site)] if site else list_sites(store.conn)
        covers_all = not site or rollups.in_sync(store.conn)
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=error_console) as bar:
            for target in targets:
                (total,) = store.conn.execute(
                    "SELECT COUNT(*) FROM events WHERE site_id = ?", (target.id,)).fetchone()
                task = bar.add_task(f"{target.id} events", total=total)
                done = rollups.rebuild_site(
                    store.conn, target.id,
                    progress=lambda count, task=task: bar.update(task, completed=count),
                    covers_all=covers_all and target is targets[-1],
                    fills_parts=not site and target is targets[-1])
                bar.update(task, completed=done)
    finally:
        store.close()
    console.print(f"rebuilt the rollups of {len(targets)} site(s)")
    if not covers_all:
        error_console.print("other sites have events the rollups miss, so reports still read "
                            "raw events: run 'trackpixel rollups rebuild' without --site")


def _print_table(table: reports.Table, output: OutputFormat) -> None:
    if output is OutputFormat.json:
        sys.stdout.write(orjson.dumps(table.as_dicts()).decode() + "\n")
    elif output is OutputFormat.csv:
        buffer = io.StringIO()
        write_csv(buffer, table.columns, table.rows)
        sys.stdout.write(buffer.getvalue())
    else:
        rich_table = RichTable(title=_plain_text(table.title))
        for column in table.columns:
            rich_table.add_column(column, overflow="fold")
        for row in table.rows:
            rich_table.add_row(*(_plain_text(value) for value in row))
        console.print(rich_table)


# C0 and C1 control characters other than tab and newline, and DEL.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _plain_text(value: Any) -> Text:
    """Return a table cell for the terminal: tracked values may contain rich markup such as
    ``[/b]`` or terminal escape sequences, so markup stays literal and control characters
    are shown as ``\\xNN`` escapes."""
    if value is None:
        return Text("")
    escaped = _CONTROL_CHARACTERS.sub(
        lambda match: match.group().encode("unicode_escape").decode("ascii"), str(value))
    return Text(escaped)


# export

@app.command()
@handle_errors
def export(
    site: SiteOption,
    data_dir: DataDirOption = None,
    from_day: FromOption = None,
    to_day: ToOption = None,
    output_format: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.csv,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="File to write [default: standard output].")] = None,
) -> None:
    """Export raw events (bots and machine opens included, flagged) as CSV or JSON Lines."""
    from trackpixel.storage.records import EVENT_COLUMNS

    _, store = _open(data_dir)
    found, query = _query(store, site, from_day, to_day, 1)
    cursor = store.conn.execute(
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE site_id = ? AND local_day >= ? "
        "AND local_day <= ? ORDER BY ts, id", (found.id, query.from_day, query.to_day))
    try:
        handle = open(output, "w", newline="") if output else sys.stdout  # noqa: SIM115
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror}") from None
    try:
        if output_format is ExportFormat.csv:
            write_csv(handle, EVENT_COLUMNS, cursor)
        else:
            for row in cursor:
                handle.write(orjson.dumps(dict(zip(EVENT_COLUMNS, row, strict=True))).decode()
                             + "\n")
    finally:
        if output:
            handle.close()


# dashboard users

class Role(StrEnum):
    admin = "admin"
    viewer = "viewer"


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
@handle_errors
def users_add(
    email: Annotated[str, typer.Argument(help="Login email address.")],
    role: Annotated[Role, typer.Option(
        help="admin: every site and user management; viewer: only the --site grants.")],
    site: Annotated[list[str] | None, typer.Option(
        "--site", help="Site id or domain the user may see; repeat for more sites.")] = None,
    password_stdin: Annotated[bool, typer.Option(
        help="Read the password from the first line of standard input instead of a prompt.")]
    = False,
    data_dir: DataDirOption = None,
) -> None:
    """Create a dashboard user with a password."""
    from trackpixel.web import auth

    _, store = _open(data_dir)
    site_ids = tuple(get_site(store.conn, value).id for value in site or [])
    if role is Role.viewer and not site_ids:
        raise CliError("a viewer needs at least one --site")
    try:
        user = auth.add_user(store.conn, email, role.value, _read_password(password_stdin),
                             site_ids)
    except auth.AuthError as exc:
        raise CliError(str(exc)) from None
    console.print(f"added {user.role} {user.email}", markup=False)


@users_app.command("list")
@handle_errors
def users_list(data_dir: DataDirOption = None,
               output: FormatOption = OutputFormat.table) -> None:
    """List dashboard users, their roles and sites."""
    from trackpixel.web import auth

    _, store = _open(data_dir)
    rows: list[list[Any]] = [
        [user.email, user.role, "all" if user.is_admin else " ".join(sorted(user.site_ids))]
        for user in auth.list_users(store.conn)
    ]
    _print_table(reports.Table("Users", ["email", "role", "sites"], rows), output)


def _open_user(data_dir: str | None, email: str) -> tuple[SqliteStore, Any]:
    """Open the data directory's database and find the dashboard user ``email``."""
    from trackpixel.web import auth

    _, store = _open(data_dir)
    try:
        return store, auth.find_user(store.conn, email)
    except auth.AuthError as exc:
        raise CliError(str(exc)) from None


@users_app.command("token")
@handle_errors
def users_token(
    email: Annotated[str, typer.Argument(help="Email of the user the token acts as.")],
    label: Annotated[str, typer.Option(help="Name to recognise the token by.")] = "api",
    data_dir: DataDirOption = None,
) -> None:
    """Create an API token for the report API; it is printed once and stored hashed."""
    from trackpixel.web import auth

    store, user = _open_user(data_dir, email)
    sys.stdout.write(auth.create_token(store.conn, user, label) + "\n")


@users_app.command("password")
@handle_errors
def users_password(
    email: Annotated[str, typer.Argument(help="Email of the user.")],
    password_stdin: Annotated[bool, typer.Option(
        help="Read the password from the first line of standard input instead of a prompt.")]
    = False,
    data_dir: DataDirOption = None,
) -> None:
    """Set a user's password and log out their browser sessions; API tokens keep working
    until revoked with 'trackpixel users revoke-token'."""
    from trackpixel.web import auth

    _, store = _open(data_dir)
    try:
        ended = auth.set_password(store.conn, email, _read_password(password_stdin))
    except auth.AuthError as exc:
        raise CliError(str(exc)) from None
    console.print(f"password set for {email}; {ended} session(s) ended", markup=False)


@users_app.command("remove")
@handle_errors
def users_remove(
    email: Annotated[str, typer.Argument(help="Email of the user to remove.")],
    data_dir: DataDirOption = None,
) -> None:
    """Remove a user with their site grants, browser sessions and API tokens."""
    from trackpixel.web import auth

    _, store = _open(data_dir)
    try:
        sessions, api_tokens = auth.remove_user(store.conn, email)
    except auth.AuthError as exc:
        raise CliError(str(exc)) from None
    console.print(f"removed {email}: {sessions} session(s) ended, {api_tokens} API token(s) "
                  "revoked", markup=False)


@users_app.command("tokens")
@handle_errors
def users_tokens(
    email: Annotated[str, typer.Argument(help="Email of the user.")],
    data_dir: DataDirOption = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """List a user's API tokens: id, label, creation and last use (UTC milliseconds)."""
    from trackpixel.web import auth

    store, user = _open_user(data_dir, email)
    rows: list[list[Any]] = [[token.id, token.label, token.created_ts, token.last_used_ts]
                             for token in auth.list_tokens(store.conn, user)]
    _print_table(reports.Table(f"API tokens of {user.email}",
                               ["id", "label", "created_ts", "last_used_ts"], rows), output)


@users_app.command("revoke-token")
@handle_errors
def users_revoke_token(
    email: Annotated[str, typer.Argument(help="Email of the token's user.")],
    token: Annotated[str, typer.Argument(
        help="The token's id from 'trackpixel users tokens EMAIL', or the token itself.")],
    data_dir: DataDirOption = None,
) -> None:
    """Revoke one API token, so requests with it are rejected."""
    from trackpixel.web import auth

    store, user = _open_user(data_dir, email)
    by_id = token.isascii() and token.isdecimal()
    key: int | str = int(token) if by_id else token
    # A token given by value is a secret, so messages name only an id.
    if not auth.revoke_token(store.conn, user, key):
        missing = f"API token {token}" if by_id else "such API token"
        raise CliError(f"{user.email} has no {missing}: run 'trackpixel users tokens "
                       f"{user.email}'")
    revoked = f"API token {token}" if by_id else "the given API token"
    console.print(f"revoked {revoked} of {user.email}", markup=False)


# quick start

@app.command()
@handle_errors
def quickstart(
    data_dir: DataDirOption = None,
    collector: CollectorOption = DEFAULT_PUBLIC_URL,
) -> None:
    """Create the data directory and a demo site for localhost if there is none, and print
    the snippet, an email pixel and the report command."""
    directory = resolve_data_dir(data_dir)
    directory.ensure()
    conn = connect(directory.db_path)
    migrate(conn)
    existing = list_sites(conn)
    base = collector.rstrip("/")
    if existing:
        site = existing[0]
        console.print(f"Using site {site.id} ({site.domain}) in {directory.root}")
    else:
        site, api_key = add_site(conn, "localhost", timezone=os.environ.get("TZ", "UTC")
                                 if _valid_zone(os.environ.get("TZ")) else "UTC",
                                 extra_domains=("127.0.0.1",))
        console.print(f"Created demo site {site.id} for localhost in {directory.root}")
        console.print(f"Server API key (shown once): {api_key}", markup=False)
    token = tokens.sign(directory.secret(), "open",
                        {"s": site.id, "cmp": "demo-newsletter", "r": "demo-subscriber-1"})
    console.rule("Paste into every page")
    console.print(snippet_html(site.id, base), markup=False, highlight=False)
    console.rule("Email open pixel for one demo recipient (see 'trackpixel email-pixel --help')")
    console.print(f'<img src="{base}/o/{token}.gif" width="1" height="1" alt="">', markup=False,
                  highlight=False)
    console.rule("Reports")
    # The command that runs this one, so the printed lines work as they are, from .venv too.
    program = _program_path()
    console.print(f"{program} report overview --site {site.id}", markup=False)
    console.print(f"Dashboard: {base}/dashboard (create a login with "
                  f"'{program} users add EMAIL --role admin')", markup=False, highlight=False)
    # curl's own User-Agent is counted as a bot, so the test hit sends a browser's.
    console.print(f"Pixel test: curl -A '{BROWSER_USER_AGENT}' '{base}/p.gif?s={site.id}&u="
                  f"{quote('http://localhost/hello', safe='')}'", markup=False,
                  highlight=False, soft_wrap=True)


BROWSER_USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                      "Chrome/131.0 Safari/537.36")


def _program_path() -> str:
    """Return how to run trackpixel as this process was run: ``trackpixel`` when PATH finds
    this program under that name, else the path it was started by (``.venv/bin/trackpixel``)."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) != "trackpixel" or \
            shutil.which("trackpixel") == os.path.abspath(argv0):
        return "trackpixel"
    return argv0


def _valid_zone(name: str | None) -> bool:
    if not name:
        return False
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


# privacy

privacy_app = _typer("Export or erase what is stored about one person.")
app.add_typer(privacy_app, name="privacy")

SelectorKindOption = Annotated[str, typer.Option(
    "--by", help="What VALUE is: visitor (the _tp_vid cookie or a stored visitor id), "
                 "user_id (user_data.external_id of server events) or email.")]


@privacy_app.command("export")
@handle_errors
def privacy_export(
    value: Annotated[str, typer.Argument(help="The visitor id, user id or email address.")],
    site: SiteOption,
    by: SelectorKindOption = "visitor",
    data_dir: DataDirOption = None,
    store_url: StoreOption = None,
) -> None:
    """Print every event and session record of one person as JSON."""
    from trackpixel import rights

    directory, store = _open(data_dir)
    found = get_site(store.conn, site)
    events = _open_events(directory, store, store_url)
    result = rights.export(store.conn, rights.selector(found.id, by, value),
                           None if events is store else events)
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")


@privacy_app.command("erase")
@handle_errors
def privacy_erase(
    value: Annotated[str, typer.Argument(help="The visitor id, user id or email address.")],
    site: SiteOption,
    by: SelectorKindOption = "visitor",
    data_dir: DataDirOption = None,
    wait: Annotated[float, typer.Option(
        help="Seconds to wait for a running server's processor before erasing here.")] = 10.0,
    store_url: StoreOption = None,
) -> None:
    """Erase every event and session record of one person, and log an audit record.

    A running server's processor carries the request out once every earlier hit is stored.
    If none picks it up within --wait seconds, this command drains the spools and erases
    itself."""
    import time as time_module

    from trackpixel import rights
    from trackpixel.pipeline.processor import Processor

    directory, store = _open(data_dir)
    found = get_site(store.conn, site)
    request_id = rights.request_erasure(store.conn, rights.selector(found.id, by, value))
    deadline = time_module.monotonic() + wait
    status = rights.request_status(store.conn, request_id)
    while status and status["status"] == "pending" and time_module.monotonic() < deadline:
        time_module.sleep(0.2)
        status = rights.request_status(store.conn, request_id)
    if status and status["status"] == "pending":
        worker = Processor(directory, store, _open_events(directory, store, store_url))
        while worker.drain_once():
            pass
        worker.maintenance.apply_erasures()
        worker.close()
        status = rights.request_status(store.conn, request_id)
    sys.stdout.write(orjson.dumps(status).decode() + "\n")


@sites_app.command("privacy")
@handle_errors
def sites_privacy(
    site: Annotated[str, typer.Argument(help="Site id or domain.")],
    data_dir: DataDirOption = None,
    consent_mode: Annotated[str | None, typer.Option(
        help="cookieless: count without identifiers when analytics_storage is denied; "
             "strict: collect nothing then.")] = None,
    honor_gpc: Annotated[bool | None, typer.Option(
        help="Treat Sec-GPC: 1 as an opt-out of sale and sharing.")] = None,
    honor_dnt: Annotated[bool | None, typer.Option(
        help="Treat DNT: 1 as a denial of every consent signal.")] = None,
    default: Annotated[list[str] | None, typer.Option(
        help="Global default, SIGNAL=granted|denied (repeatable).")] = None,
    region: Annotated[list[str] | None, typer.Option(
        help="Regional default, REGION:SIGNAL=granted|denied, REGION being EEA or an ISO "
             "country code; REGION:all=denied sets all four (repeatable).")] = None,
    scrub_param: Annotated[list[str] | None, typer.Option(
        help="Another query parameter to remove from stored URLs (repeatable).")] = None,
    retention_days: Annotated[int | None, typer.Option(
        help="Days raw events are kept; older days keep only day-level rollups.")] = None,
    rejected_retention_days: Annotated[int | None, typer.Option(
        help="Days rejected hits are kept.")] = None,
) -> None:
    """Show or change a site's consent defaults, privacy signals, scrubbing and retention."""
    from trackpixel.privacy import SIGNALS
    from trackpixel.sites import update_privacy

    _, store = _open(data_dir)
    found = get_site(store.conn, site)
    current = orjson.loads(found.privacy.to_json())
    changes: dict[str, Any] = {}
    for key, value in (("consent_mode", consent_mode), ("honor_gpc", honor_gpc),
                       ("honor_dnt", honor_dnt), ("retention_days", retention_days),
                       ("rejected_retention_days", rejected_retention_days)):
        if value is not None:
            changes[key] = value
    if default:
        changes["defaults"] = {**current["defaults"], **_signal_pairs(default, "--default")}
    if region:
        regions = dict(current["region_defaults"])
        for item in region:
            code, _, pair = item.partition(":")
            if not pair:
                raise CliError(f"--region {item!r} must look like EEA:ad_storage=denied")
            signals = _signal_pairs([pair], "--region")
            if "all" in signals:
                signals = dict.fromkeys(SIGNALS, signals.pop("all"))
            regions[code.upper()] = {**regions.get(code.upper(), {}), **signals}
        changes["region_defaults"] = regions
    if scrub_param:
        changes["scrub_params"] = sorted({*current["scrub_params"], *scrub_param})
    if changes:
        found = update_privacy(store.conn, found.id, changes)
    sys.stdout.write(orjson.dumps(orjson.loads(found.privacy.to_json()),
                                  option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command()
@handle_errors
def audience(
    site: SiteOption,
    event: Annotated[str, typer.Option(help="Event name the audience did, e.g. 'Lead Submitted'.")],
    data_dir: DataDirOption = None,
    from_day: FromOption = None,
    to_day: ToOption = None,
    output: FormatOption = OutputFormat.csv,
) -> None:
    """List visitors who did EVENT and may be reached again: ad_personalization granted, no
    later denial, no bots, no machine opens."""
    from trackpixel.audiences import audience_sql

    _, store = _open(data_dir)
    found, query = _query(store, site, from_day, to_day, 1)
    text, params = audience_sql(found.id, event, query.from_day, query.to_day)
    rows = [list(row) for row in store.query(text, params)]
    _print_table(reports.Table(f"Audience: {event}", ["visitor_id", "last_ts", "events"], rows),
                 output)


def _signal_pairs(items: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        signal, _, state = item.partition("=")
        if not state:
            raise CliError(f"{option} {item!r} must look like ad_storage=denied")
        pairs[signal.strip()] = state.strip()
    return pairs


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        sys.stdout.write(f"trackpixel {version('trackpixel')}\n")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False) -> None:
    """Self-hosted tracking pixel and conversion measurement server."""


def main() -> None:
    """Run the CLI; a usage error prints one ``Error: ...`` line and exits with status 2."""
    # typer 0.29 bundles click as typer._click and exports no name for this error.
    from typer._click.exceptions import NoArgsIsHelpError

    try:
        status = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:
        # Usage errors: an invalid option value, a missing argument, an unknown command.
        error_console.print(f"Error: {exc.format_message()}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
    except typer.Abort:
        error_console.print("Aborted.", markup=False, highlight=False)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
