"""ERROR log records while a bot runs: kept, and failed on unless a test declares them expected.

discord.py logs an exception in a command, view or modal and carries on, and a bot's own
``log.exception(...)`` in a handler does the same: the user sees "Something went wrong" while the
test's assertions still pass. Watching every logger (not only ``discord``) turns that into a
failure with the record's message and traceback.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence


class ErrorLog(logging.Handler):
    """Keeps ERROR (and CRITICAL) records of the watched loggers; ``None`` watches all."""

    def __init__(self, loggers: Sequence[str] | None = None) -> None:
        super().__init__(logging.ERROR)
        self.loggers = tuple(loggers) if loggers is not None else None
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.loggers is None or any(
            record.name == name or record.name.startswith(name + ".") for name in self.loggers
        ):
            self.records.append(record)

    @contextlib.contextmanager
    def attached(self) -> Iterator[ErrorLog]:
        """Listen on the root logger for the duration; records propagate there from every
        logger, whichever thread (the event loop, a worker) logged them."""
        root = logging.getLogger()
        root.addHandler(self)
        try:
            yield self
        finally:
            root.removeHandler(self)


def describe(record: logging.LogRecord) -> str:
    """The record as a failure shows it: logger, message, and the traceback if it had one."""
    text = f"{record.name}: {record.getMessage()}"
    if record.exc_info:
        text += "\n" + logging.Formatter().formatException(record.exc_info)
    return text


def check(records: Sequence[logging.LogRecord], expected: Sequence[str] = ()) -> None:
    """Fail on a record no ``expected`` pattern matches, and on a pattern nothing matched.

    A pattern is a regular expression searched in the message and in the exception's
    ``Type: text``, so a test names the error it provokes, not where it was logged.
    """
    patterns = [re.compile(p) for p in expected]
    matched: set[int] = set()
    unexpected = []
    for record in records:
        hits = {i for i, p in enumerate(patterns) if p.search(_searchable(record))}
        matched |= hits
        if not hits:
            unexpected.append(record)
    problems = [describe(r) for r in unexpected]
    problems += [
        f"expected an ERROR record matching {p.pattern!r}; none was logged"
        for i, p in enumerate(patterns)
        if i not in matched
    ]
    if problems:
        raise AssertionError(
            "ERROR log records are not what the test expects:\n\n" + "\n\n".join(problems)
        )


def _searchable(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        error = record.exc_info[1]
        text += f"\n{type(error).__name__}: {error}"
    return text
