"""The processor's state as ``trackpixel serve`` supervises it, shared with the collector
workers through a small JSON file so that ``/healthz`` can report a stopped processor.

``serve`` sets ``STATUS_ENV`` to the file's path for its workers; without it (``serve
--no-processor``, or the collector app run by another server) the processor is not checked.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

STATUS_ENV = "TRACKPIXEL_PROCESSOR_STATUS"
# The processor counts as unhealthy after this many restarts within RESTART_WINDOW_S.
MAX_RECENT_RESTARTS = 3
RESTART_WINDOW_S = 600.0


@dataclass(frozen=True)
class ProcessorStatus:
    state: str  # "running", "restarting" (exited, waiting to restart) or "stopped"
    pid: int | None
    restarts: int  # since serve started
    # Wall-clock times (Unix seconds) of the restarts within RESTART_WINDOW_S of the last one.
    restart_times: list[float]
    last_exit: str | None  # e.g. "exit code 1" or "signal SIGKILL"

    def recent_restarts(self, now: float | None = None) -> int:
        """Return how many restarts happened within RESTART_WINDOW_S before ``now``."""
        moment = time.time() if now is None else now
        return sum(1 for restarted in self.restart_times
                   if moment - restarted <= RESTART_WINDOW_S)

    def problem(self, now: float | None = None) -> str | None:
        """Return why the processor is unhealthy at ``now``, or None when it is healthy."""
        if self.state != "running":
            return f"processor is {self.state} after {self.last_exit or 'an unknown exit'}"
        recent = self.recent_restarts(now)
        if recent >= MAX_RECENT_RESTARTS:
            return (f"processor restarted {recent} times in the last "
                    f"{RESTART_WINDOW_S / 60:.0f} minutes, last after {self.last_exit}")
        return None


def write_status(path: Path, status: ProcessorStatus) -> None:
    """Replace the status file atomically, so a reader never sees a partial file."""
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(orjson.dumps(asdict(status)))
    os.replace(temporary, path)


def read_status() -> ProcessorStatus | None:
    """Return the supervised processor's status, or None when no processor is supervised.

    A missing or unreadable file while ``STATUS_ENV`` is set reads as a stopped processor."""
    path = os.environ.get(STATUS_ENV)
    if not path:
        return None
    try:
        return ProcessorStatus(**orjson.loads(Path(path).read_bytes()))
    except (OSError, orjson.JSONDecodeError, TypeError) as exc:
        return ProcessorStatus("stopped", None, 0, [], f"unreadable status file: {exc}")
