"""Checks on the built browser snippet: it exists, stays small, and matches its source."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "trackpixel" / "collector" / "static"
SOURCE = STATIC / "t.js"
MINIFIED = STATIC / "t.min.js"
BUILD_SCRIPT = ROOT / "scripts" / "build-snippet.sh"
TERSER = ROOT / "node_modules" / ".bin" / "terser"
MAX_GZIPPED_BYTES = 2048


def test_minified_snippet_exists() -> None:
    assert MINIFIED.is_file(), f"{MINIFIED} is missing; run scripts/build-snippet.sh"


def test_minified_snippet_gzipped_size() -> None:
    # Level 9 matches `gzip -9`, which scripts/build-snippet.sh reports.
    size = len(gzip.compress(MINIFIED.read_bytes(), compresslevel=9))
    assert size < MAX_GZIPPED_BYTES, f"t.min.js is {size} bytes gzipped"


def test_minified_snippet_up_to_date(tmp_path: Path) -> None:
    if not TERSER.exists():
        pytest.skip("terser is not installed; run 'npm ci' at the repository root")
    rebuilt = tmp_path / "t.min.js"
    subprocess.run(["sh", str(BUILD_SCRIPT), str(rebuilt)], check=True, capture_output=True,
                   timeout=120)
    assert rebuilt.read_bytes() == MINIFIED.read_bytes(), (
        "t.min.js differs from a fresh build of t.js; run scripts/build-snippet.sh and commit it")


def test_snippet_source_documents_install_tag() -> None:
    source = SOURCE.read_text()
    assert "window.trackpixel=window.trackpixel||function()" in source
    assert 'data-site="SITE_ID"' in source
