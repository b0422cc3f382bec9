"""Quitting as on a desktop: a session manager of the sandbox's own (host/sessionmanager.py),
which the launcher serves while the app runs, so that a stop asks the app to save and quit
(XSMP's SaveYourself and Die, as a logout does) before any signal."""

from __future__ import annotations

import stat
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features.base import CheckedPath, Feature, Session, Source
from sandboxapp.features.request import absolute_path, refused
from sandboxapp.fs.safepath import ensure_user_dir
from sandboxapp.host.sessionmanager import SESSION_SOCKET
from sandboxapp.system.nspawn import Bind
from sandboxapp.undo.entries import SessionManagerEntry

if TYPE_CHECKING:
    from sandboxapp.host.sessionmanager import SessionManager
    from sandboxapp.plan import LaunchPlan

SESSION_DIR = ".session"
# The directory only lets the container's processes (nobody here) through to the socket.
SESSION_DIR_MODE = 0o711
# Where the socket appears inside. SESSION_MANAGER names it with the "unix" transport:
# "local" would try an abstract socket first and, finding none, make the client sleep a second.
INSIDE_DIR = PurePosixPath("/run/sandboxapp/session")
ADDRESS = f"unix/:{INSIDE_DIR / SESSION_SOCKET}"


@dataclass(frozen=True)
class SessionManagement(Feature):
    dir: Path
    # The session side's, once served.
    served: list[SessionManager] = field(default_factory=list, compare=False)

    @classmethod
    def prepare(cls, session: Session, stack: ExitStack) -> SessionManagement:
        directory = session.host_dir(SESSION_DIR)
        session.supervisor.add(stack, SessionManagerEntry(str(directory), session.user.uid))
        ensure_user_dir(directory, session.user, SESSION_DIR_MODE, exact_mode=True)
        return cls(directory)

    def checked_paths(self, trusted_profile: bool) -> list[CheckedPath]:
        return [CheckedPath(self.dir, False, "session manager directory", stat.S_IFDIR)]

    def binds(self, source: Source) -> list[Bind]:
        return [Bind(source(self.dir), str(INSIDE_DIR))]

    def env(self) -> list[tuple[str, str]]:
        return [("SESSION_MANAGER", ADDRESS)]

    KEY = "session_manager"

    def part(self) -> dict[str, Any]:
        return {"dir": str(self.dir)}

    @classmethod
    def from_part(cls, plan: LaunchPlan, part: Any) -> SessionManagement | None:
        if part is None:
            return None
        if not isinstance(part, dict) or set(part) != {"dir"}:
            raise refused("the session manager's part is not {dir}")
        return cls(absolute_path(part["dir"], "the session manager directory"))

    def describe(self) -> list[str]:
        return [f"quit:     a session manager of its own ({ADDRESS}), served by the launcher: "
                "a stop asks the app to save and quit, as a logout does, before any signal"]

    def grant(self, session: Session, stack: ExitStack) -> None:
        from sandboxapp.host.sessionmanager import serving

        socket_path = self.dir / SESSION_SOCKET
        try:
            self.served.append(stack.enter_context(serving(socket_path, session.user)))
        except OSError as exc:
            raise SandboxError(f"cannot make the sandbox's session manager socket "
                               f"{socket_path}: {exc.strerror}",
                               status=ExitStatus.LAUNCHER) from None

    def ask_to_quit(self) -> bool:
        return any(manager.ask_to_quit() for manager in self.served)
