"""File-system operations that must be careful: atomic swaps, and deletion of trees that
sandboxapp created (never anything else, never across a mount point)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from sandboxapp.errors import SandboxError
from sandboxapp.fs.mounts import MNT_DETACH, libc

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(first: Path, second: Path) -> None:
    """Swap two paths in one atomic step (renameat2 RENAME_EXCHANGE)."""
    result = libc().renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if result != 0:
        code = ctypes.get_errno()
        raise SandboxError(f"cannot swap {first} and {second}: {os.strerror(code)}")


def put_in_place(path: Path, fill: Callable[[Path], object], *, mode: int,
                 owner: tuple[int, int] | None = None, suffix: str = "") -> None:
    """A new file beside path (its name starts with a dot), given its mode and owner, filled
    (and checked) by fill, then put in place at once; a fill that fails leaves nothing
    behind. (The launch record, written on the launch's path, has its own: nofollow.py.)"""
    import tempfile  # not on a launch's path: a launch loads this module for its layer

    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    temporary = Path(name)
    try:
        os.chmod(temporary, mode)
        if owner is not None:
            os.chown(temporary, *owner)
        fill(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points() -> list[Path]:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as stream:
        return [Path(_unescape_mountinfo(line.split()[4])) for line in stream if line.strip()]


def overlays_writing_to(upper: Path) -> list[Path]:
    """The mount points of overlays whose upper directory is upper."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as stream:
        for line in stream:
            head, _, tail = line.partition(" - ")
            fields = tail.split()
            if len(fields) >= 3 and fields[0] == "overlay" and (
                    f"upperdir={upper}" in _unescape_mountinfo(fields[2]).split(",")):
                found.append(Path(_unescape_mountinfo(head.split()[4])))
    return found


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below path, deepest first."""
    below = f"{path}/"
    found = [m for m in mount_points() if m == path or str(m).startswith(below)]
    return sorted(set(found), key=lambda m: len(m.parts), reverse=True)


def processes_using(path: Path) -> list[int]:
    """Pids whose root directory or working directory is at or below path."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        for link in ("root", "cwd"):
            try:
                target = Path(os.readlink(f"/proc/{entry.name}/{link}"))
            except OSError:
                continue
            if target == path or path in target.parents:
                pids.append(int(entry.name))
                break
    return pids


def remove_tree(path: Path, *, marker: str, check_users: bool = True) -> None:
    """Delete a directory tree that sandboxapp made.

    The tree must be a real directory (not a symlink) holding `marker`, the file sandboxapp
    writes into every tree it creates; mounts left below it (by a killed build or launch) are
    detached first, and nothing is deleted while anything is still mounted below. check_users:
    refuse while a process has its root or working directory inside (skipped where the caller
    knows, as after a container has exited).
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise SandboxError(f"refusing to delete {path}: not a directory")
    if not (path / marker).is_file():
        raise SandboxError(
            f"refusing to delete {path}: it has no {marker}, so sandboxapp did not make it",
            hint="look at it and remove it by hand if it is not needed",
        )
    users = processes_using(path) if check_users else []
    if users:
        raise SandboxError(
            f"refusing to delete {path}: in use by process {', '.join(map(str, users))}"
        )
    for mount_point in mounts_under(path):
        if libc().umount2(os.fsencode(mount_point), MNT_DETACH) != 0:
            code = ctypes.get_errno()
            raise SandboxError(f"cannot detach {mount_point}: {os.strerror(code)}")
    # A bind mount of the user's files would be deleted through: nothing may be mounted below.
    if mounts_under(path):
        raise SandboxError(f"refusing to delete {path}: something is still mounted below it")
    # The marker goes last, so that a deletion cut short can be recognised and finished later.
    delete_trees([child for child in path.iterdir() if child.name != marker])
    (path / marker).unlink()
    path.rmdir()


def delete_trees(paths: list[Path]) -> None:
    """Delete paths and all below them, however deep (a sandbox may nest directories
    thousands deep: Python's rmtree recurses, and fails past a thousand), never following a
    symlink, never crossing into another file system (rm -r works through directory
    descriptors, without recursion)."""
    from sandboxapp.command import run

    if paths:
        run(["rm", "-rf", "--one-file-system", "--", *map(str, paths)],
            what=f"deleting {paths[0].parent}")


def tree_size(path: Path) -> int:
    """Bytes used by the files below path (hard links counted once), staying on one device."""
    seen: set[tuple[int, int]] = set()
    total = 0
    root_dev = path.lstat().st_dev
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            entries: Iterator[os.DirEntry[str]] = os.scandir(current)
        except OSError:
            continue
        with entries as it:  # type: ignore[attr-defined]
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode) and st.st_dev == root_dev:
                    stack.append(Path(entry.path))
    return total


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.EROFS):
            raise
    finally:
        os.close(fd)
