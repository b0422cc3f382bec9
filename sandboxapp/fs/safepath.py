"""Paths that root uses on the desktop user's behalf, opened without following the user's
symlinks (nofollow.py does the walking), and the desktop user a launch is for.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.fs import nofollow
from sandboxapp.paths import sudo_caller


@dataclass(frozen=True)
class DesktopUser:
    uid: int
    gid: int

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> DesktopUser:
        # Under sudo the desktop user is the one who called sudo, not root.
        caller = sudo_caller(environ)
        return cls(*caller) if caller is not None else cls(os.getuid(), os.getgid())

    def acted_for(self) -> DesktopUser | None:
        """This user where root acts for them (what root makes must become theirs); None
        where the launcher runs as the user, or the user is root."""
        return self if os.geteuid() == 0 and self.uid != 0 else None


def refuse(path: str | Path, why: str, hint: str | None = None) -> SandboxError:
    return SandboxError(f"refusing to use {path}: {why}", status=ExitStatus.LAUNCHER, hint=hint)


def _refused(exc: nofollow.Refused, hint: str | None = None) -> SandboxError:
    return refuse(exc.path, exc.why, hint)


def ensure_user_dir(path: Path, user: DesktopUser, mode: int = 0o700, *,
                    exact_mode: bool = False) -> None:
    """Make sure the directory exists and belongs to the user, creating what is missing as
    the user's; exact_mode: and that it has mode, whatever it had."""
    try:
        nofollow.ensure_dir(str(path), user.uid, user.gid, mode, exact_mode=exact_mode)
    except nofollow.Refused as exc:
        raise _refused(exc, hint="move it out of the way; sandboxapp creates it again"
                       if exc.path == str(path) else None) from None


def open_user_path(path: Path, user: DesktopUser, *, trusted: bool = False) -> int:
    """An O_PATH descriptor for path (a directory, file or socket) that is the user's own.

    trusted: the path comes from a root-owned profile; root-owned targets are then allowed.
    """
    try:
        return nofollow.open_owned(str(path), user.uid, user.gid, trusted=trusted)
    except nofollow.Refused as exc:
        raise _refused(exc) from None


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


def create_user_file(held: int, name: str, user: DesktopUser, mode: int) -> int:
    """A new regular file, name, in a directory of the user's that open_user_path opened
    (held): never through a symlink at name; the user's where root makes it for them. The
    caller closes the descriptor it returns."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode, dir_fd=held)
    owner = user.acted_for()
    if owner is not None:
        os.fchown(fd, owner.uid, owner.gid)
    return fd


def write_user_file(directory: Path, name: str, data: bytes, user: DesktopUser,
                    mode: int) -> Path:
    """Replace directory/name, in a directory of the user's, with a new regular file of data:
    made through the directory opened without following the user's symlinks (root, acting for
    the user, writes there and nowhere else, however the path is swapped meanwhile)."""
    held = open_user_path(directory, user)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=held)
        with os.fdopen(create_user_file(held, name, user, mode), "wb") as stream:
            stream.write(data)
    except OSError as exc:
        raise refuse(directory / name, exc.strerror or str(exc)) from None
    finally:
        os.close(held)
    return directory / name
