"""README "## Metrics" names every counter and gauge a part of the server registers on
``/metrics`` (``easync.metrics.Metrics``): an admin reading the table sees what there
is to scrape.  Found in the source, so a new one cannot be added without its row."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGISTERED = re.compile(r"\.(?:counter|gauge|histogram)\(\s*\"([a-z_]+)\"")


def _metrics_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Metrics\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_every_registered_metric_is_in_the_readme_table() -> None:
    names = set()
    for folder in ("easync", "backends"):
        for path in (ROOT / folder).rglob("*.py"):
            names.update(REGISTERED.findall(path.read_text(encoding="utf-8")))
    # the deleted-items feature's two (issue #14 point 2) are among them
    assert {"easync_mass_deletes_total", "easync_deleted_items_purged_total"} <= names
    rows = set(re.findall(r"`([a-z_]+)(?:\{[a-z_,]*\})?`", _metrics_section()))
    assert sorted(names - rows) == []
