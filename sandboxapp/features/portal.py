"""file_chooser = true: a file chooser portal on the sandbox's own session bus, served by the
launcher (host/portal.py): the dialog is the user's, on their desktop, and the files chosen
there, alone, are bound into the running sandbox."""

from __future__ import annotations

import stat
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features.base import CheckedPath, Feature, Session, Source
from sandboxapp.features.container import PORTAL_DIR
from sandboxapp.features.request import absolute_path, refused
from sandboxapp.fs.safepath import ensure_user_dir
from sandboxapp.host.portal import PORTAL_SOCKET
from sandboxapp.system.nspawn import Bind
from sandboxapp.undo.entries import PortalEntry

if TYPE_CHECKING:
    from sandboxapp.plan import LaunchPlan


# Where the sandbox writes what it saves through the file chooser (host/saving.py): a
# directory per request below it.
SAVING_DIR = PurePosixPath("/run/sandboxapp/saving")


@dataclass(frozen=True)
class FileChooser(Feature):
    # The directory of the user's where the sandbox's bus makes the socket the launcher uses.
    door: Path
    # The user's directory, below the profile's data directory, of the saves' directories.
    saving: Path

    KEY = "file_chooser"

    @classmethod
    def prepare(cls, session: Session, stack: ExitStack) -> FileChooser | None:
        if not session.plan.profile.sandbox.file_chooser:
            return None
        # On disk, below the profile's data directory, like its persistent directories: the
        # sandbox can write there (its bus makes its socket there), and what it writes must
        # not fill the user's runtime directory, which is memory.
        door = session.plan.data_root / ".portal"
        # Its undo removes the directory and whatever the sandbox left in it.
        session.supervisor.add(stack, PortalEntry(str(door), session.user.uid))
        ensure_user_dir(door, session.user, 0o700, exact_mode=True)
        saving = _saving(session.plan)
        ensure_user_dir(saving, session.user, 0o700, exact_mode=True)
        return cls(door, saving)

    def part(self) -> dict[str, Any]:
        return {"dir": str(self.door)}

    @classmethod
    def from_part(cls, plan: LaunchPlan, part: Any) -> FileChooser | None:
        if not plan.profile.sandbox.file_chooser:
            if part is not None:
                raise SandboxError("a file chooser was asked for, but the profile has none",
                                   status=ExitStatus.LAUNCHER)
            return None
        if part is None:
            return None  # a dry run, or a join: nothing of it is named
        if not isinstance(part, dict) or set(part) != {"dir"}:
            raise refused("the file chooser's part is not {dir}")
        return cls(absolute_path(part["dir"], "the file chooser's directory"), _saving(plan))

    def checked_paths(self, trusted_profile: bool) -> list[CheckedPath]:
        return [CheckedPath(self.door, False, "file chooser's directory", stat.S_IFDIR),
                CheckedPath(self.saving, False, "file chooser's saves", stat.S_IFDIR)]

    def binds(self, source: Source) -> list[Bind]:
        # Writable, the container root's: the sandbox's bus makes its socket there, and the
        # sandbox writes what it saves.
        return [Bind(source(self.door), PORTAL_DIR, read_only=False, root_idmap=True),
                Bind(source(self.saving), str(SAVING_DIR), read_only=False, root_idmap=True)]

    def describe(self) -> list[str]:
        return ["files:    a file dialog on your desktop when it asks (its session bus's "
                "org.freedesktop.portal.FileChooser, served by the launcher): the files you "
                "choose there, and no others, are bound into it read-only; what it saves goes "
                f"through {self.saving} to where you choose"]

    def grant(self, session: Session, stack: ExitStack) -> None:
        """Served from when the sandbox's bus is up until the launch ends."""
        from sandboxapp.host.chooser import choose
        from sandboxapp.host.portal import Ask, FileChooserPortal, title_for
        from sandboxapp.host.saving import Saves

        profile = session.plan.profile.name

        # Saves start in the user's download directory, where the profile has a folder there.
        downloads = session.plan.downloads
        folder = downloads.parent if downloads is not None else None

        def ask_user(ask: Ask, stop: threading.Event) -> Any:
            return choose(ask.kind, title_for(profile, ask), multiple=ask.multiple,
                          current_name=ask.current_name, names=ask.names, folder=folder,
                          user=session.user, environ=session.environ, stop=stop)

        saves = Saves(self.saving, session.user, session.warn)
        stack.callback(saves.close)

        def save_to(target: Path, replace: bool) -> PurePosixPath:
            directory = saves.directory_for(target.name, target, replace=replace)
            return SAVING_DIR / directory.name / target.name

        portal = FileChooserPortal(self.door / PORTAL_SOCKET, profile, choose=ask_user,
                                   hand=session.hand, save_to=save_to,
                                   focused=session.focused, warn=session.warn)
        stack.callback(portal.close)
        portal.start()


def _saving(plan: LaunchPlan) -> Path:
    return plan.data_root / ".saving"
