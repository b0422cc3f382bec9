"""Native Wayland (wayland = true, in a Wayland session, host/wayland.py): where the compositor
offers wp_security_context_manager_v1, a socket of the sandbox's own, which the launcher
registers with it (the compositor treats its clients as sandboxed; what they are offered was
checked against ALLOWED_GLOBALS as the launch was planned), and which stops taking connections
when the launch ends;
elsewhere the compositor's own socket, where it offers no client more than any may have.
Either socket alone is bound, idmapped so the container's root may connect to the user's socket
and nobody else gains anything; no X.

Which compositor is safe to hand a sandbox is the user's launcher's judgement (it asks the
compositor, as the user): the root side binds only a socket the user owns, so a request forged
by hand can widen only the user's own sandbox, to a socket of their own.

The socket is the user's (0755 in the 0700 runtime directory): the bind maps its owner to the
container's root inside this container's mount namespace only, so the socket is not widened for
anyone else, and no other file of the user's runtime directory is seen inside. The root side
checks and stages the very socket it binds (a path in a directory the user controls).
"""

from __future__ import annotations

import os
import socket
import stat
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features.base import CheckedPath, Feature, Session, Source
from sandboxapp.features.request import absolute_path, refused
from sandboxapp.fs.safepath import ensure_user_dir, open_user_path
from sandboxapp.host.wayland import (
    SANDBOX_SOCKET,
    WaylandPath,
    register_sandbox_socket,
)
from sandboxapp.system.nspawn import Bind
from sandboxapp.undo.entries import WaylandSocketEntry

if TYPE_CHECKING:
    from sandboxapp.plan import LaunchPlan

# The compositor's socket inside, named by an absolute WAYLAND_DISPLAY.
INSIDE_SOCKET = PurePosixPath("/run/sandboxapp/wayland-0")
# The app's runtime directory inside (toolkits refuse one they do not own): made by the app's
# own start, owned by the container's root.
RUNTIME_DIR = PurePosixPath("/run/user/0")
MAKE_RUNTIME_DIR = 'mkdir -p -m 0700 "$XDG_RUNTIME_DIR" && exec "$@"'
# Connections a registered socket holds before the compositor accepts them.
LISTEN_BACKLOG = 16


# The user's directory holding a registered socket: the root side reaches it; the socket is
# bound alone, so the mode matters for nobody else.
WAYLAND_DIR = ".wayland"
WAYLAND_DIR_MODE = 0o700


@dataclass(frozen=True)
class WaylandAccess(Feature):
    socket: Path

    @classmethod
    def prepare(cls, session: Session, stack: ExitStack) -> WaylandAccess | None:
        choice = session.plan.wayland
        if choice is None or not choice.native:
            return None
        if choice.path is not WaylandPath.SECURITY_CONTEXT:
            return cls(choice.socket)
        directory = session.host_dir(WAYLAND_DIR)
        session.supervisor.add(stack, WaylandSocketEntry(str(directory), session.user.uid))
        ensure_user_dir(directory, session.user, WAYLAND_DIR_MODE, exact_mode=True)
        # The directory as opened without following the user's symlinks: root, acting for
        # the user, makes and hands over the socket there and nowhere else, however the path
        # is swapped meanwhile.
        held = open_user_path(directory, session.user)
        try:
            through = f"/proc/self/fd/{held}/{SANDBOX_SOCKET}"
            with socket.socket(socket.AF_UNIX,
                               socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as listener:
                listener.bind(through)
                owner = session.user.acted_for()
                if owner is not None:  # the root side binds only the user's own
                    os.chown(SANDBOX_SOCKET, owner.uid, owner.gid, dir_fd=held,
                             follow_symlinks=False)
                listener.listen(LISTEN_BACKLOG)
                plan = session.plan
                close = register_sandbox_socket(choice.socket, listener, plan.profile.name,
                                                plan.machine)
            # Closing it stops new connections (those made end with the sandbox). What its
            # clients are offered was asked as the launch was planned (choose_path).
            stack.callback(os.close, close)
        except OSError as exc:
            raise SandboxError(f"cannot make the sandbox's Wayland socket in {directory}: "
                               f"{exc.strerror or exc}", status=ExitStatus.LAUNCHER) from None
        finally:
            os.close(held)
        return cls(directory / SANDBOX_SOCKET)

    def checked_paths(self, trusted_profile: bool) -> list[CheckedPath]:
        return [CheckedPath(self.socket, False, "Wayland socket", stat.S_IFSOCK)]

    def binds(self, source: Source) -> list[Bind]:
        return [Bind(source(self.socket), str(INSIDE_SOCKET), root_idmap=True)]

    def env(self) -> list[tuple[str, str]]:
        return [("WAYLAND_DISPLAY", str(INSIDE_SOCKET)), ("XDG_RUNTIME_DIR", str(RUNTIME_DIR)),
                ("MOZ_ENABLE_WAYLAND", "1"), ("GDK_BACKEND", "wayland")]

    def wrap(self, command: tuple[str, ...]) -> tuple[str, ...]:
        return ("/bin/sh", "-c", MAKE_RUNTIME_DIR, "sh", *command)

    KEY = "wayland"

    def part(self) -> dict[str, Any]:
        return {"socket": str(self.socket)}

    @staticmethod
    def naming(plan: LaunchPlan, layer: Path | None) -> dict[str, Any] | None:
        """The part of a plan shown natively (features.naming): the environment and the bind
        come from it. A dry run (layer: where it would make its directories) names the socket
        a launch would register; a join, the socket the plan names."""
        choice = plan.wayland
        if choice is None or not choice.native:
            return None
        if choice.path is WaylandPath.SECURITY_CONTEXT and layer is not None:
            return WaylandAccess(layer / WAYLAND_DIR / SANDBOX_SOCKET).part()
        return WaylandAccess(choice.socket).part()

    @staticmethod
    def socket_in(part: Any) -> Path | None:
        """The compositor socket a request's part names (the root side's plan is shown
        natively on it)."""
        if part is None:
            return None
        if not isinstance(part, dict) or set(part) != {"socket"}:
            raise refused("the Wayland part is not {socket}")
        return absolute_path(part["socket"], "the Wayland socket")

    @classmethod
    def from_part(cls, plan: LaunchPlan, part: Any) -> WaylandAccess | None:
        socket = cls.socket_in(part)
        if socket is None:
            return None
        if not plan.profile.sandbox.wayland:
            raise refused("the profile has no wayland = true")
        return cls(socket)

    def describe(self) -> list[str]:
        return [f"Wayland:  the socket {self.socket}, bound alone (idmapped) as "
                f"{INSIDE_SOCKET}: no X display"]
