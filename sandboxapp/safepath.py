"""Paths that root uses on the desktop user's behalf, opened without following the user's
symlinks: each component is opened relative to its parent with O_NOFOLLOW, and ownership is
checked on the open descriptor, not on the name, so a path swapped for a symlink between the
check and the use is refused or harmless.

A symlink is only followed where root owns both it and the directory it is in (a system layout
such as /home -> /usr/home), never among the user's files.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sandboxapp.errors import ExitStatus, SandboxError

# Places a user's profile may never bind or keep data in, whatever their ownership says.
FORBIDDEN_ROOTS = tuple(Path(p) for p in (
    "/etc", "/root", "/boot", "/usr", "/proc", "/sys", "/dev", "/var/lib/sandboxapp",
    "/run/sandboxapp",
))


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


def refuse(path: str | Path, why: str, hint: str | None = None) -> SandboxError:
    return SandboxError(f"refusing to use {path}: {why}", status=ExitStatus.LAUNCHER, hint=hint)


def _open_component(dir_fd: int, name: str, current: str, user: DesktopUser,
                    flags: int) -> int:
    """Open one path component below dir_fd, following a symlink only if root owns it and
    the directory it is in."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        if st.st_uid != 0 or os.fstat(dir_fd).st_uid != 0:
            raise refuse(current, "it is a symlink among files the user controls")
        fd = os.open(name, flags, dir_fd=dir_fd)
    else:
        fd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=dir_fd)
    owner = os.fstat(fd).st_uid
    if owner not in (0, user.uid):
        os.close(fd)
        raise refuse(current, f"it belongs to UID {owner}, not to UID {user.uid}")
    return fd


def _walk(path: Path, user: DesktopUser, *, create: bool, mode: int = 0o700) -> int:
    """An O_PATH descriptor for the directory `path`, created (as the user's) if asked."""
    if not path.is_absolute() or ".." in path.parts:
        raise refuse(path, "not an absolute path without '..'")
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    current = "/"
    try:
        for name in path.parts[1:]:
            current = os.path.join(current, name)
            flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
            try:
                next_fd = _open_component(fd, name, current, user, flags)
            except FileNotFoundError:
                if not create:
                    raise refuse(current, "it does not exist") from None
                os.mkdir(name, mode, dir_fd=fd)
                next_fd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=fd)
                # O_PATH descriptors cannot fchown: go through /proc/self/fd.
                os.chown(f"/proc/self/fd/{next_fd}", user.uid, user.gid)
            except NotADirectoryError:
                raise refuse(current, "it is not a directory") from None
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def ensure_user_dir(path: Path, user: DesktopUser, mode: int = 0o700) -> None:
    """Make sure the directory exists and belongs to the user, creating what is missing as
    the user's."""
    fd = _walk(path, user, create=True, mode=mode)
    try:
        owner = os.fstat(fd).st_uid
        if owner != user.uid:
            raise refuse(path, f"it belongs to UID {owner}, not to UID {user.uid}",
                         hint="move it out of the way; sandboxapp creates it again")
    finally:
        os.close(fd)


def open_user_path(path: Path, user: DesktopUser, *, trusted: bool = False) -> int:
    """An O_PATH descriptor for path (a directory, file or socket) that is the user's own.

    trusted: the path comes from a root-owned profile; root-owned targets are then allowed.
    """
    parent = _walk(path.parent, user, create=False)
    try:
        fd = _open_component(parent, path.name, str(path), user, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        raise refuse(path, "it does not exist") from None
    finally:
        os.close(parent)
    try:
        st = os.fstat(fd)
        if stat.S_ISLNK(st.st_mode):
            raise refuse(path, "it is a symlink")
        if not trusted:
            if st.st_uid != user.uid:
                raise refuse(path, f"it belongs to UID {st.st_uid}, not to you (UID {user.uid})")
            # Root launching for itself (an admin, a test) keeps its data in /root like any
            # user keeps it at home; for everyone else these places are out of bounds.
            real = Path(os.readlink(f"/proc/self/fd/{fd}"))
            for forbidden in FORBIDDEN_ROOTS if user.uid != 0 else ():
                if real == forbidden or forbidden in real.parents:
                    raise refuse(path, f"a user's profile cannot use anything below {forbidden}")
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_user_file(path: Path, user: DesktopUser, *, trusted: bool, limit: int) -> bytes:
    """The contents of a regular file opened through open_user_path's checks."""
    fd = open_user_path(path, user, trusted=trusted)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise refuse(path, "not a regular file")
        with open(f"/proc/self/fd/{fd}", "rb") as stream:
            return stream.read(limit + 1)
    finally:
        os.close(fd)


def write_file_no_follow(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace path with a new regular file, never writing through a symlink."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as stream:
        stream.write(text)
