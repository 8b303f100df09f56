"""Checks that a database path is safe to open before SQLite touches it."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from pipeline.errors import UserError

DATABASE_SUFFIXES = (".db", ".sqlite3")

# WAL relies on shared memory and POSIX locks that these filesystems do not provide reliably,
# which corrupts the database silently instead of failing loudly.
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "fuse.sshfs"}
)

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def check_database_path(path: Path, mounts_file: Path = Path("/proc/mounts")) -> None:
    """Refuse a path SQLite could not use safely, creating its directory when missing."""
    if path.suffix not in DATABASE_SUFFIXES:
        raise UserError(
            f"the database file {str(path)!r} must end in .db or .sqlite3, so it is never "
            "mistaken for another file; choose a name such as 'dreamcord.db'"
        )
    if path.is_dir():
        raise UserError(
            f"the database path {str(path)!r} is a directory; give a file path inside it, "
            f"for example {str(path / 'dreamcord.db')!r}"
        )
    directory = path.parent
    _ensure_writable_directory(directory)
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise UserError(
            f"the database file {str(path)!r} cannot be read and written by this user; fix its "
            "owner or permissions (for example `chown` it to the user running Dreamcord)"
        )
    fs_type = filesystem_type(directory, _read_mounts(mounts_file))
    if fs_type in NETWORK_FILESYSTEMS:
        raise UserError(
            f"the database directory {str(directory)!r} is on a network filesystem ({fs_type}), "
            "where SQLite's WAL mode can corrupt data; set DATA_DIR to a local disk or a "
            "Docker volume"
        )


def filesystem_type(path: Path, mounts: str) -> str:
    """The type of the filesystem holding `path`, from /proc/mounts text ('' if unknown).

    The longest mount point that contains the path wins, as the kernel resolves it.
    """
    target = path.resolve()
    best_point, best_type = "", ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), fields[1])
        if _contains(Path(point), target) and len(point) >= len(best_point):
            best_point, best_type = point, fields[2]
    return best_type


def _contains(mount_point: Path, target: Path) -> bool:
    return target == mount_point or mount_point in target.parents


def _read_mounts(mounts_file: Path) -> str:
    # Not Linux (or no procfs): nothing to check against, so allow rather than refuse.
    try:
        return mounts_file.read_text()
    except OSError:
        return ""


def _ensure_writable_directory(directory: Path) -> None:
    """Create the directory if needed and prove a file can be created in it.

    SQLite needs to create `-wal` and `-shm` files beside the database. A real probe file
    catches read-only mounts too, which `os.access` misses when running as root.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UserError(
            f"cannot write in the database directory {str(directory)!r} ({reason}); create it "
            "and give the user running Dreamcord write access, or set DATA_DIR to a writable "
            "folder"
        ) from None
