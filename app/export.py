"""Streamed exports of a view as CSV or JSON, shared by the dashboard and the API. No Flask here."""
import csv
import io
import json
from typing import Iterable, Iterator, Sequence

# Cells that a spreadsheet would run as a formula (SPEC §6): prefixed with ' so they stay text.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
BATCH = 1000
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def csv_cell(value):
    """One CSV cell: numbers as numbers, None as empty, text guarded against formula injection."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return value
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def stream_csv(columns: Sequence[str], rows: Iterable[dict]) -> Iterator[str]:
    """CSV text of `rows` (a header of `columns`, then one line per row), yielded in batches."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    n = 0
    for row in rows:
        writer.writerow([csv_cell(row.get(c)) for c in columns])
        n += 1
        if n % BATCH == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def stream_json(columns: Sequence[str], rows: Iterable[dict]) -> Iterator[str]:
    """A JSON array of `rows` (objects with `columns`), yielded in batches."""
    parts, first = ["["], True
    for row in rows:
        parts.append(("\n" if first else ",\n") + json.dumps({c: row.get(c) for c in columns}))
        first = False
        if len(parts) >= BATCH:
            yield "".join(parts)
            parts = []
    parts.append("\n]\n")
    yield "".join(parts)


def stream(fmt: str, columns: Sequence[str], rows: Iterable[dict]) -> Iterator[str]:
    """The export of `rows` in `fmt` (`csv` or `json`)."""
    return stream_csv(columns, rows) if fmt == "csv" else stream_json(columns, rows)
