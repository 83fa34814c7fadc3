from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from server import Server, SiteInfo, add_site


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def site(data_dir: Path) -> SiteInfo:
    """A site for localhost in Pacific/Auckland, so day buckets differ from UTC."""
    return add_site(data_dir, "localhost", "--timezone", "Pacific/Auckland", "--also",
                    "127.0.0.1")


@pytest.fixture
def server(data_dir: Path, site: SiteInfo) -> Iterator[Server]:
    running = Server(data_dir).start()
    yield running
    running.stop()
