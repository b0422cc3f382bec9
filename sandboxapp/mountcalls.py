"""The mount system calls sandboxapp makes, through libc; failures raise OSError.

Only `ctypes` and `os` are imported: a prestarted launch (prestart.py) mounts its layer before
the rest of sandboxapp is loaded.
"""

from __future__ import annotations

import ctypes
import os

MS_BIND = 4096
MNT_DETACH = 2
_LIBC: list[ctypes.CDLL] = []


def libc() -> ctypes.CDLL:
    if not _LIBC:
        # By its soname: ctypes.util.find_library runs ldconfig, which a launch cannot afford.
        _LIBC.append(ctypes.CDLL("libc.so.6", use_errno=True))
    return _LIBC[0]


def _check(result: int) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def mount_overlay(lower: str, upper: str, work: str, target: str, *, volatile: bool) -> None:
    for path in (lower, upper, work):
        if any(c in path for c in ",:\\"):
            raise OSError(0, f"{path} has ',', ':' or '\\', which an overlay mount cannot take")
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if volatile:
        # The layer is thrown away at exit: no need to sync it to disk.
        options += ",volatile"
    _check(libc().mount(b"overlay", os.fsencode(target), b"overlay", 0, options.encode()))


def bind_descriptor(fd: int, target: str, *, directory: bool) -> None:
    """Bind-mount the file or directory open as fd (O_PATH) on target, which is created. The
    mount goes through /proc/self/fd, so it is the very inode that was checked, whatever has
    happened to its path since."""
    if directory:
        os.mkdir(target, 0o700)
    else:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    _check(libc().mount(f"/proc/self/fd/{fd}".encode(), os.fsencode(target), None, MS_BIND,
                        None))


def unmount(target: str) -> None:
    _check(libc().umount2(os.fsencode(target), MNT_DETACH))
