"""``trackpixel serve``: the processor process plus granian collector workers.

granian (a Rust HTTP server) runs the ASGI collector in ``workers`` processes; each worker
owns a spool. One processor process turns spooled hits into events. Stopping the server with
SIGINT or SIGTERM lets the workers commit what they hold and the processor drain the spools.
A processor that exits while the server runs is started again.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import wait

from granian.constants import Interfaces, Loops
from granian.server import Server

from trackpixel import logs
from trackpixel.config import DATA_DIR_ENV, DataDir
from trackpixel.pipeline.processor import run_processor
from trackpixel.processor_status import (
    RESTART_WINDOW_S,
    STATUS_ENV,
    ProcessorStatus,
    write_status,
)
from trackpixel.storage.sqlite import connect, migrate

log = logging.getLogger("trackpixel.serve")

# Delay before restarting a processor that exited, doubled after each restart up to the
# maximum, and back to the first value once a processor has run for RESTART_STABLE_S.
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 60.0
RESTART_STABLE_S = 300.0


def _processor_main(root: str, parent_pid: int, store_url: str,
                    drain_only: bool = False) -> None:
    logs.configure()
    stop = threading.Event()
    if drain_only:
        # Store what the spools contain, then exit.
        stop.set()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    # Ctrl-C reaches the whole process group. The processor ignores it and waits for the
    # SIGTERM that ``serve`` sends once every worker has closed its spool, so its final drain
    # reads every spool complete.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from pathlib import Path
    try:
        run_processor(DataDir(Path(root)), stop, parent_pid=parent_pid, store_url=store_url)
    except Exception:
        # Logged here in the server's log format; serve then starts a new processor.
        log.exception("processor failed")
        raise SystemExit(1) from None


def start_processor(data_dir: DataDir, store_url: str = "sqlite", *,
                    drain_only: bool = False) -> multiprocessing.process.BaseProcess:
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=_processor_main,
                              args=(str(data_dir.root), os.getpid(), store_url, drain_only),
                              name="trackpixel-processor")
    # An ignored signal stays ignored in the new process, so a Ctrl-C that reaches the process
    # group while the processor is still importing does not end it before its drain.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    try:
        process.start()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return process


class ProcessorSupervisor:
    """Run the processor process and start it again, after a growing delay, whenever it exits
    before ``stop``. Its state goes to a status file that the workers' ``/healthz`` reads."""

    def __init__(self, data_dir: DataDir, store_url: str) -> None:
        self.data_dir = data_dir
        self.store_url = store_url
        self.status_path = data_dir.root / "processor-status.json"
        self.process: multiprocessing.process.BaseProcess | None = None
        self.restarts = 0
        self._restart_times: deque[float] = deque()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="processor-supervisor",
                                        daemon=True)

    def start(self) -> None:
        self.process = start_processor(self.data_dir, self.store_url)
        self._write("running", None)
        self._thread.start()

    def stop(self) -> None:
        """Stop the processor with SIGTERM, so it drains the spools, and wait for it."""
        with self._lock:
            self._stopping.set()
            process = self.process
        if process is not None:
            process.terminate()
            process.join(timeout=60)
            log.info("processor exited with code %s", process.exitcode)
            if process.exitcode != 0:
                # A SIGTERM that arrives while the processor is still starting ends it before
                # it installs its handler, so a new one stores what the spools contain.
                drain = start_processor(self.data_dir, self.store_url, drain_only=True)
                drain.join(timeout=300)
                log.info("final drain exited with code %s", drain.exitcode)
        self._thread.join(timeout=5)
        self._write("stopped", None)

    def _watch(self) -> None:
        delay = RESTART_FIRST_S
        while True:
            process = self.process
            assert process is not None
            started = time.monotonic()
            wait([process.sentinel])
            if self._stopping.is_set():
                return
            process.join()
            if time.monotonic() - started >= RESTART_STABLE_S:
                delay = RESTART_FIRST_S
            last_exit = _describe_exit(process.exitcode)
            self._record_restart()
            log.error("processor (pid %s) exited unexpectedly with %s; restart %d in %.0f s",
                      process.pid, last_exit, self.restarts, delay)
            self._write("restarting", last_exit)
            if self._stopping.wait(delay):
                return
            delay = min(RESTART_MAX_S, delay * 2)
            with self._lock:
                if self._stopping.is_set():
                    return
                self.process = start_processor(self.data_dir, self.store_url)
            log.info("processor restarted as pid %s", self.process.pid)
            self._write("running", last_exit)

    def _record_restart(self) -> None:
        # Wall-clock time, because readers of the status file compare it with their own clock.
        now = time.time()
        self.restarts += 1
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > RESTART_WINDOW_S:
            self._restart_times.popleft()

    def _write(self, state: str, last_exit: str | None) -> None:
        process = self.process
        status = ProcessorStatus(state=state, pid=process.pid if process else None,
                                 restarts=self.restarts,
                                 restart_times=list(self._restart_times),
                                 last_exit=last_exit)
        try:
            write_status(self.status_path, status)
        except OSError as exc:
            log.error("cannot write the processor status to %s: %s", self.status_path, exc)


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


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

    supervisor = None
    if with_processor:
        supervisor = ProcessorSupervisor(data_dir, store_url)
        os.environ[STATUS_ENV] = str(supervisor.status_path)
        supervisor.start()
    else:
        os.environ.pop(STATUS_ENV, None)
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
        if supervisor is not None:
            supervisor.stop()


def _redacted(store_url: str) -> str:
    """Return the store URL without a password, for logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(store_url)
    if parts.password is None:
        return store_url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
