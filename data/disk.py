"""A full disk, told as such.

ENOSPC and EDQUOT from a file write, and SQLite's SQLITE_FULL ("database or disk is full"),
become one `DiskFull` naming the folder to free space in, so that a job fails with that answer
instead of hanging, and a database on a full disk is not called unusable.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import UserError

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFull(UserError):
    """No room left where Dreamcord writes; the operator frees space, then tries again."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"the disk is full: free space on {path}")
        self.path = path


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is the file system or SQLite saying that no space is left."""
    if isinstance(error, OSError):
        return error.errno in FULL_ERRNOS
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        return code is not None and code & 0xFF == sqlite3.SQLITE_FULL  # extended codes too
    return False


@contextmanager
def reporting_full_disk(path: Path) -> Iterator[None]:
    """Raise `DiskFull(path)` for a full-disk error inside the block; others pass unchanged."""
    try:
        yield
    except (OSError, sqlite3.Error) as error:
        if is_disk_full(error):
            raise DiskFull(path) from error
        raise
