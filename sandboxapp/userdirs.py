"""Directories that root creates on behalf of the desktop user, without following the user's
symlinks: each component is opened relative to its parent with O_NOFOLLOW, and ownership is
checked on the open descriptor, not on the name."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sandboxapp.errors import ExitStatus, SandboxError


@dataclass(frozen=True)
class DesktopUser:
    uid: int
    gid: int

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> DesktopUser:
        # Under sudo the desktop user is the one who called sudo, not root.
        if os.geteuid() == 0:
            uid, gid = environ.get("SUDO_UID", ""), environ.get("SUDO_GID", "")
            if uid.isdigit() and gid.isdigit():
                return cls(int(uid), int(gid))
        return cls(os.getuid(), os.getgid())


def _refuse(path: str, why: str) -> SandboxError:
    return SandboxError(f"refusing to use {path}: {why}", status=ExitStatus.LAUNCHER,
                        hint="move it out of the way; sandboxapp creates it again")


def ensure_user_dir(path: Path, user: DesktopUser, mode: int = 0o700) -> None:
    """Make sure the directory path exists and belongs to user, creating what is missing
    as that user's. An existing symlink is only followed where root owns both it and the
    directory it is in (a system layout such as /home -> /usr/home), never in the user's files.
    """
    if not path.is_absolute():
        raise _refuse(str(path), "not an absolute path")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    current = "/"
    try:
        for index, name in enumerate(path.parts[1:]):
            last = index == len(path.parts) - 2
            current = os.path.join(current, name)
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                os.mkdir(name, mode, dir_fd=fd)
                created = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  dir_fd=fd)
                os.fchown(created, user.uid, user.gid)
                os.close(fd)
                fd = created
                continue
            parent_st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                if st.st_uid != 0 or parent_st.st_uid != 0:
                    raise _refuse(current, "it is a symlink in a directory the user controls")
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
            else:
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                next_fd = os.open(name, flags, dir_fd=fd)
            except NotADirectoryError:
                raise _refuse(current, "it is not a directory") from None
            opened = os.fstat(next_fd)
            os.close(fd)
            fd = next_fd
            if opened.st_uid not in (0, user.uid):
                raise _refuse(current, f"it belongs to UID {opened.st_uid}, not to UID {user.uid}")
            if last and opened.st_uid != user.uid:
                raise _refuse(current, f"it belongs to UID {opened.st_uid}, not to UID {user.uid}")
    finally:
        os.close(fd)


def write_file_no_follow(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace path with a new regular file, never writing through a symlink."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
