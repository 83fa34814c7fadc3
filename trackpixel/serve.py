"""``trackpixel serve``: the processor process plus granian collector workers.

granian (a Rust HTTP server) runs the ASGI collector in ``workers`` processes; each worker
owns a spool. One processor process turns spooled hits into events. Stopping the server with
SIGINT or SIGTERM lets the workers commit what they hold and the processor drain the spools.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading

from granian.constants import Interfaces, Loops
from granian.server import Server

from trackpixel import logs
from trackpixel.config import DATA_DIR_ENV, DataDir
from trackpixel.pipeline.processor import run_processor
from trackpixel.storage.sqlite import connect, migrate

log = logging.getLogger("trackpixel.serve")


def _processor_main(root: str, parent_pid: int, store_url: str) -> None:
    logs.configure()
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    # Ctrl-C reaches the whole process group. The processor ignores it and waits for the
    # SIGTERM that ``serve`` sends once every worker has closed its spool, so its final drain
    # reads every spool complete.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from pathlib import Path
    run_processor(DataDir(Path(root)), stop, parent_pid=parent_pid, store_url=store_url)


def start_processor(data_dir: DataDir,
                    store_url: str = "sqlite") -> multiprocessing.process.BaseProcess:
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_processor_main,
                              args=(str(data_dir.root), os.getpid(), store_url),
                              name="trackpixel-processor")
    process.start()
    return process


def serve(data_dir: DataDir, host: str, port: int, workers: int, *,
          with_processor: bool = True, store_url: str = "sqlite") -> None:
    """Serve until stopped; the processor writes events to the store at ``store_url``."""
    data_dir.ensure()
    data_dir.settings()  # fail early on an invalid config.toml
    conn = connect(data_dir.db_path)
    migrate(conn)
    conn.close()
    os.environ[DATA_DIR_ENV] = str(data_dir.root)
    # Collector workers read it for privacy exports, which query the event store.
    os.environ["TRACKPIXEL_STORE"] = store_url

    processor = start_processor(data_dir, store_url) if with_processor else None
    server = Server(
        "trackpixel.collector.app:create_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        backlog=2048,
        log_access=False,
        # No endpoint speaks WebSocket; without the upgrade check each request costs less.
        websockets=False,
        # A worker that has not exited this many seconds after a stop signal is killed. Every
        # acknowledged hit is already committed, so the kill loses none of them.
        workers_kill_timeout=15,
    )
    log.info("serving on http://%s:%d with %d worker(s), data in %s, events in %s", host, port,
             workers, data_dir.root, _redacted(store_url))
    try:
        server.serve()
    finally:
        if processor is not None:
            processor.terminate()
            processor.join(timeout=60)
            log.info("processor exited with code %s", processor.exitcode)


def _redacted(store_url: str) -> str:
    """Return the store URL without a password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(store_url)
    if parts.password is None:
        return store_url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
