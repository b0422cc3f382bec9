"""Paths that root uses on the desktop user's behalf, opened without following the user's
symlinks (nofollow.py does the walking), and the desktop user a launch is for.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
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


def open_for_reading(path: Path, user: DesktopUser) -> int:
    """A descriptor of the regular file path, open for reading as the user may open it: the
    user's own call, or, where root acts for the user, one of the user's own files (raises
    nofollow.Refused then). Never through a symlink at path (a sandbox may have put one where
    the user looks: in its downloads directory, named as a download), and never blocked on a
    FIFO; anything but a regular file raises OSError. The caller closes it."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    if user.acted_for() is None:
        fd = os.open(path, flags | os.O_NOFOLLOW)
    else:
        # open_owned refuses a symlink itself; the reopening goes through /proc's link to the
        # descriptor, which O_NOFOLLOW would refuse.
        held = nofollow.open_owned(str(path), user.uid, user.gid, trusted=False)
        try:
            fd = os.open(f"/proc/self/fd/{held}", flags)
        finally:
            os.close(held)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "it is not a regular file")
    return fd


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
    return _made_users(fd, user)


def _made_users(fd: int, user: DesktopUser) -> int:
    """fd, of what root just made for user, made the user's (closed where it cannot be)."""
    owner = user.acted_for()
    if owner is not None:
        try:
            os.fchown(fd, owner.uid, owner.gid)
        except BaseException:
            os.close(fd)
            raise
    return fd


def make_user_dir(held: int, name: str, user: DesktopUser) -> int:
    """A new folder, name, in a directory of the user's that is open (held); the user's
    where root makes it for them. A descriptor of it, open for reading, which the caller
    closes."""
    os.mkdir(name, 0o777, dir_fd=held)
    return _made_users(os.open(name, nofollow.DIR_FLAGS, dir_fd=held), user)


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


RENAME_NOREPLACE = 1


def rename_noreplace(source_dir: int, name: str, target_dir: int, new: str) -> None:
    """renameat2(RENAME_NOREPLACE): never over what is there; raises FileExistsError then."""
    from sandboxapp.fs.mounts import libc

    if libc().renameat2(source_dir, os.fsencode(name), target_dir, os.fsencode(new),
                        RENAME_NOREPLACE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), name)


def rename_unique(source_dir: int, name: str, target_dir: int, wanted: str) -> str:
    """Rename name in source_dir to wanted in target_dir, never over what is there: "STEM (2).
    SUFFIX" and so on where wanted is taken. The name it got; FileExistsError where the first
    hundred are all taken."""
    stem, dot, suffix = wanted.partition(".") if not wanted.startswith(".") else (
        wanted, "", "")
    for n in range(1, 100):
        new = wanted if n == 1 else f"{stem} ({n}){dot}{suffix}"
        try:
            rename_noreplace(source_dir, name, target_dir, new)
        except FileExistsError:
            continue
        return new
    raise FileExistsError(errno.EEXIST, f"{wanted} and its numbered names are taken")


def move_user_entries(source: Path, target: Path, user: DesktopUser) -> list[str]:
    """Move what a directory of the user's holds into another of theirs, each entry renamed
    (never copied, never over another: "NAME (2)" where NAME is taken), both directories
    opened without following symlinks; source is removed once empty. The names left behind
    (another file system, say); none where source does not exist."""
    try:
        held_source = open_user_path(source, user)
    except SandboxError:
        if not os.path.lexists(source):
            return []
        raise
    left: list[str] = []
    try:
        held_target = open_user_path(target, user)
        try:
            for name in sorted(os.listdir(f"/proc/self/fd/{held_source}")):
                try:
                    rename_unique(held_source, name, held_target, name)
                except OSError:
                    left.append(name)
        finally:
            os.close(held_target)
    finally:
        os.close(held_source)
    if not left:
        with contextlib.suppress(OSError):
            parent = open_user_path(source.parent, user)
            try:
                os.rmdir(source.name, dir_fd=parent)
            finally:
                os.close(parent)
    return left
