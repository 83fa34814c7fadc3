"""CSV output shared by the CLI and the report API, with cells safe to open in spreadsheets."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

# Spreadsheet programs run a cell that starts with one of these as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """Return ``value`` safe for spreadsheets: text that would run as a formula gets a ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def write_csv(handle: TextIO, columns: Sequence[str], rows: Iterable[Sequence[Any]],
              lineterminator: str = "\n") -> None:
    """Write a header row and ``rows`` to ``handle``, each cell passed through ``safe_cell``."""
    writer = csv.writer(handle, lineterminator=lineterminator)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([safe_cell(value) for value in row])
