"""The one timestamp format stored in the database."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    """Now as fixed-width UTC ISO-8601 text with microseconds.

    Fixed width keeps text order equal to time order, so `ORDER BY created_at` and range
    queries on the text are correct, and the value stays readable in the sqlite3 shell.
    """
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
