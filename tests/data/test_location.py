"""Finding the filesystem type of a path from /proc/mounts text."""

from __future__ import annotations

from pathlib import Path

from data.location import filesystem_type

MOUNTS = """\
overlay / overlay rw 0 0
/dev/sdb1 /srv ext4 rw 0 0
nas:/vol /srv/shared nfs rw 0 0
//nas/pics /mnt/my\\040pics cifs rw 0 0
sshfs#me@host: /home/me/remote fuse.sshfs rw 0 0
"""


def test_longest_mount_point_wins() -> None:
    assert filesystem_type(Path("/srv/shared/bot/data"), MOUNTS) == "nfs"
    assert filesystem_type(Path("/srv/sharedness"), MOUNTS) == "ext4"
    assert filesystem_type(Path("/srv"), MOUNTS) == "ext4"
    assert filesystem_type(Path("/etc"), MOUNTS) == "overlay"


def test_escaped_spaces_in_mount_points_are_decoded() -> None:
    assert filesystem_type(Path("/mnt/my pics/db"), MOUNTS) == "cifs"


def test_unknown_without_mount_table() -> None:
    assert filesystem_type(Path("/anything"), "") == ""
