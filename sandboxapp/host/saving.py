"""Files a sandbox saves where the user chose (the file chooser's SaveFile and SaveFiles): the
program writes into a directory of that request's, bound into the sandbox (it never sees the
folder the user chose), and the finished file is copied onto the chosen path.

A save is finished when the file of the chosen name is a regular file, nothing in the
request's directory still ends in ".part" (Firefox writes NAME.part and renames it) and the
file has not changed for a moment. "Web page, complete" adds a folder NAME_files beside it,
which goes along with it. What the user gets is a copy, made by the launcher as the user
(fs/usercopy.py): fresh files and folders, regular ones only, so that nothing the sandbox
still holds (a descriptor, a hard link, a folder it can write in) reaches them, and the
sandbox's own files go with the request's directory. Only where the user named the file
(SaveFile: their dialog asked before it replaced one) is an existing file replaced; the names
a SaveFiles chose are the sandbox's, and never replace anything: "NAME (2)" then.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sandboxapp.errors import SandboxError
from sandboxapp.fs import nofollow
from sandboxapp.fs.safepath import (
    DesktopUser,
    ensure_user_dir,
    open_user_path,
    rename_noreplace,
    rename_unique,
)
from sandboxapp.fs.usercopy import MAX_DEPTH, MAX_ENTRIES, copy_file, copy_tree

# How often a save's directory is looked at, and how long its file must stay as it is.
POLL = 0.25
SETTLED_POLLS = 2


@dataclass
class PendingSave:
    """One save answered: the sandbox writes into directory, as name; the user chose target
    (replace: by its name, so an existing file there is replaced)."""

    directory: Path
    name: str
    target: Path
    replace: bool
    last: tuple[int, int] | None = None
    still: int = 0
    done: bool = False


def _temporary() -> str:
    """A name for a copy on its way, short whatever the file's name is."""
    return f".sandboxapp-{secrets.token_hex(6)}"


class Saves:
    """The saves of one sandbox: each request's directory below root, watched until its file
    is finished and copied to the user."""

    def __init__(self, root: Path, user: DesktopUser, warn: Callable[[str], None]) -> None:
        self.root = root
        self.user = user
        self.warn = warn
        self.pending: list[PendingSave] = []
        self._lock = threading.Lock()  # the pending saves and their count
        self._looking = threading.Lock()  # one look at a time: the watcher's, or the last
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._count = 0

    def directory_for(self, name: str, target: Path, *, replace: bool) -> Path:
        """A new request's directory, where the sandbox is to write name."""
        with self._lock:
            while True:
                self._count += 1
                directory = self.root / str(self._count)
                if not os.path.lexists(directory):
                    break
            ensure_user_dir(directory, self.user, 0o700)
            self.pending.append(PendingSave(directory, name, target, replace))
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="saves", daemon=True)
                self._thread.start()
        return directory

    def close(self) -> None:
        """At the launch's end: what is finished is copied; the rest stays where it is."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._look(final=True)

    def _watch(self) -> None:
        while not self._stop.wait(POLL):
            self._look(final=False)

    def _look(self, final: bool) -> None:
        with self._looking:
            with self._lock:
                pending = [save for save in self.pending if not save.done]
            for save in pending:
                # What the sandbox made there is hostile: whatever goes wrong with one save
                # is that save's, and the watching goes on.
                with contextlib.suppress(Exception):
                    self._check(save, final)
            with self._lock:
                self.pending = [save for save in self.pending if not save.done]

    def _check(self, save: PendingSave, final: bool) -> None:
        held = open_user_path(save.directory, self.user)
        try:
            try:
                st = os.stat(save.name, dir_fd=held, follow_symlinks=False)
            except FileNotFoundError:
                return
            if not stat.S_ISREG(st.st_mode) or nofollow.exists_at(held, save.name + ".part"):
                save.still = 0
                return
            now = (st.st_size, st.st_mtime_ns)
            save.still = save.still + 1 if now == save.last else 0
            save.last = now
            if save.still < SETTLED_POLLS and not final:
                return
            save.done = True
            try:
                self._copy(save, held)
            except Exception as exc:  # the sandbox's file, as hostile as it likes
                why = (exc.message if isinstance(exc, SandboxError) else
                       exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
                self.warn(f"could not save {save.target}: {why}; what the sandbox wrote "
                          f"stays in {save.directory}")
                return
        finally:
            os.close(held)
        # The request's directory goes, with the sandbox's own files and whatever else it
        # left there.
        nofollow.clear_user_dir(str(save.directory), self.user.uid)

    def _copy(self, save: PendingSave, held: int) -> None:
        """The finished file, and its folder NAME_files where there is one, copied to where
        the user chose."""
        target = save.target
        parent = open_user_path(target.parent, self.user)
        try:
            temporary = _temporary()
            try:
                copy_file(held, save.name, parent, temporary, self.user)
                if save.replace:
                    os.replace(temporary, target.name, src_dir_fd=parent, dst_dir_fd=parent)
                else:
                    rename_unique(parent, temporary, parent, target.name)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary, dir_fd=parent)
                raise
            folder = Path(save.name).stem + "_files"
            if nofollow.exists_at(held, folder):
                self._copy_folder(held, folder, parent, target.parent)
        finally:
            os.close(parent)

    def _copy_folder(self, held: int, folder: str, parent: int, where: Path) -> None:
        """The folder beside the file, under its name, unless that is taken (the page's
        links name it)."""
        temporary = _temporary()
        try:
            whole = copy_tree(held, folder, parent, temporary, self.user)
            rename_noreplace(parent, temporary, parent, folder)
        except OSError:
            nofollow.clear_at(parent, temporary, self.user.uid)
            self.warn(f"could not save {where / folder}: it is taken, or could not be copied")
            return
        if not whole:
            self.warn(f"{where / folder} was saved in part: only regular files and folders, "
                      f"at most {MAX_ENTRIES} entries, {MAX_DEPTH} deep")

