"""Files a sandbox saves where the user chose (the file chooser's SaveFile): the program writes
into a directory of that request's, bound into the sandbox (it never sees the folder the
user chose), and the finished file is moved onto the chosen path.

A save is finished when the file of the chosen name is a regular file, nothing in the
request's directory still ends in ".part" (Firefox writes NAME.part and renames it) and the
file has not changed for a moment. "Web page, complete" adds a folder NAME_files beside it,
which goes along with it, as the chosen name's; only regular files and folders are moved,
never a symlink or anything else the sandbox made there. The launcher does this as the user,
through the request's directory opened without following symlinks: the sandbox's files go
where the user chose, and nowhere else.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sandboxapp.errors import SandboxError
from sandboxapp.fs.safepath import DesktopUser, ensure_user_dir, open_user_path

# How often a save's directory is looked at, and how long its file must stay as it is.
POLL = 0.25
SETTLED_POLLS = 2


@dataclass
class PendingSave:
    """One SaveFile answered: the sandbox writes into directory, as name; the user chose
    target."""

    directory: Path
    name: str
    target: Path
    last: tuple[int, int] | None = None
    still: int = 0
    done: bool = False
    extras: list[str] = field(default_factory=list)


def _only_files_and_folders(parent: int, name: str) -> None:
    """Remove whatever is not a regular file or a folder below the folder name in parent (one
    the sandbox wrote, moved out of its reach first): a symlink it made must not point the
    user at their own files. Walked through descriptors, never a path."""
    top = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                  dir_fd=parent)
    try:
        for _, dirs, files, fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for entry in (*dirs, *files):
                mode = os.stat(entry, dir_fd=fd, follow_symlinks=False).st_mode
                if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    os.unlink(entry, dir_fd=fd)
    finally:
        os.close(top)


def _copy_alone(parent: int, name: str) -> None:
    """Replace the file name in parent with a copy of itself: a new inode, linked nowhere
    else."""
    source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    copy = f".{name}.sandboxapp-copy"
    try:
        target = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o644, dir_fd=parent)
        try:
            while chunk := os.read(source, 1 << 20):
                os.write(target, chunk)
        finally:
            os.close(target)
        os.replace(copy, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(copy, dir_fd=parent)
        raise
    finally:
        os.close(source)


class Saves:
    """The saves of one sandbox: each request's directory below root, watched until its file
    is finished and moved."""

    def __init__(self, root: Path, user: DesktopUser) -> None:
        self.root = root
        self.user = user
        self.pending: list[PendingSave] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._count = 0

    def directory_for(self, name: str, target: Path) -> Path:
        """A new request's directory, where the sandbox is to write name."""
        with self._lock:
            while True:
                self._count += 1
                directory = self.root / str(self._count)
                if not os.path.lexists(directory):
                    break
            ensure_user_dir(directory, self.user, 0o700)
            self.pending.append(PendingSave(directory, name, target))
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="saves", daemon=True)
                self._thread.start()
        return directory

    def close(self) -> None:
        """At the launch's end: what is finished is moved; the rest stays where it is."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._look(final=True)

    def _watch(self) -> None:
        while not self._stop.wait(POLL):
            self._look(final=False)

    def _look(self, final: bool) -> None:
        with self._lock:
            for save in self.pending:
                if not save.done:
                    with contextlib.suppress(OSError, ValueError, SandboxError):
                        self._check(save, final)
            self.pending = [save for save in self.pending if not save.done]

    def _check(self, save: PendingSave, final: bool) -> None:
        held = open_user_path(save.directory, self.user)
        try:
            names = os.listdir(f"/proc/self/fd/{held}")
            try:
                st = os.stat(save.name, dir_fd=held, follow_symlinks=False)
            except FileNotFoundError:
                return
            if not stat.S_ISREG(st.st_mode) or any(n.endswith(".part") for n in names):
                save.still = 0
                return
            now = (st.st_size, st.st_mtime_ns)
            save.still = save.still + 1 if now == save.last else 0
            save.last = now
            if save.still < SETTLED_POLLS and not final:
                return
            self._move(save, held, names)
        finally:
            os.close(held)

    def _move(self, save: PendingSave, held: int, names: list[str]) -> None:
        target = save.target
        parent = open_user_path(target.parent, self.user)
        try:
            os.replace(save.name, target.name, src_dir_fd=held, dst_dir_fd=parent)
            # What was checked may have been swapped meanwhile: what arrived must still be
            # a regular file, and the user's alone: a link the sandbox made to it where it
            # writes would let it write the user's file still, so such a file is copied.
            arrived = os.stat(target.name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISREG(arrived.st_mode):
                os.unlink(target.name, dir_fd=parent)
            elif arrived.st_nlink > 1:
                _copy_alone(parent, target.name)
            folder = Path(save.name).stem + "_files"
            moved = f"{target.stem}_files"
            if folder in names and not os.path.lexists(target.parent / moved):
                with contextlib.suppress(OSError):
                    os.rename(folder, moved, src_dir_fd=held, dst_dir_fd=parent)
                    if stat.S_ISDIR(os.stat(moved, dir_fd=parent, follow_symlinks=False).st_mode):
                        _only_files_and_folders(parent, moved)
                    else:
                        os.unlink(moved, dir_fd=parent)
        finally:
            os.close(parent)
        save.done = True
        # The request's directory goes once empty; what else the sandbox left there stays.
        with contextlib.suppress(OSError):
            root = open_user_path(self.root, self.user)
            try:
                os.rmdir(save.directory.name, dir_fd=root)
            finally:
                os.close(root)
