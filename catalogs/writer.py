"""Writing a catalog as CSV, for generated libraries (the demo, tests, benchmarks)."""

from __future__ import annotations

import csv


def write_catalog(path: str, rows: list[dict]) -> str:
    """Write ``rows`` (dicts; columns are the union of their keys, in first-seen order) as a CSV
    catalog at ``path``; returns the path."""
    path = str(path)
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path
