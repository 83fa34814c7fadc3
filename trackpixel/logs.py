"""Logging configuration, applied once per process.

Named loggers: ``trackpixel.collector``, ``trackpixel.spool``, ``trackpixel.processor``,
``trackpixel.storage`` and ``trackpixel.cli``. Nothing logs per hit, a raw IP or a secret.
"""

from __future__ import annotations

import logging
import os

LEVEL_ENV = "TRACKPIXEL_LOG_LEVEL"


def configure(level: str | None = None) -> None:
    chosen = (level or os.environ.get(LEVEL_ENV) or "INFO").upper()
    root = logging.getLogger("trackpixel")
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"))
    root.addHandler(handler)
    root.setLevel(chosen)
    root.propagate = False
