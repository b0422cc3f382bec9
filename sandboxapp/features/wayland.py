"""Native Wayland (wayland = true, in a Wayland session whose compositor offers no client more
than any may have, host/wayland.py): the compositor's socket alone, bound idmapped so the
container's root may connect to the user's socket and nobody else gains anything; no X.

Which compositor is safe to hand a sandbox is the user's launcher's judgement (it asks the
compositor, as the user): the root side binds only a socket the user owns, so a request forged
by hand can widen only the user's own sandbox, to a socket of their own.

The socket is the user's (0755 in the 0700 runtime directory): the bind maps its owner to the
container's root inside this container's mount namespace only, so the socket is not widened for
anyone else, and no other file of the user's runtime directory is seen inside. The root side
checks and stages the very socket it binds (a path in a directory the user controls).
"""

from __future__ import annotations

import stat
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sandboxapp.features.base import CheckedPath, Feature, Session, Source
from sandboxapp.features.request import absolute_path, refused
from sandboxapp.system.nspawn import Bind

if TYPE_CHECKING:
    from sandboxapp.plan import LaunchPlan

# The compositor's socket inside, named by an absolute WAYLAND_DISPLAY.
INSIDE_SOCKET = PurePosixPath("/run/sandboxapp/wayland-0")
# The app's runtime directory inside (toolkits refuse one they do not own): made by the app's
# own start, owned by the container's root.
RUNTIME_DIR = PurePosixPath("/run/user/0")
MAKE_RUNTIME_DIR = 'mkdir -p -m 0700 "$XDG_RUNTIME_DIR" && exec "$@"'


@dataclass(frozen=True)
class WaylandAccess(Feature):
    socket: Path

    @classmethod
    def prepare(cls, session: Session, stack: ExitStack) -> WaylandAccess | None:
        choice = session.plan.wayland
        return cls(choice.socket) if choice is not None and choice.native else None

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
    def naming(plan: LaunchPlan) -> dict[str, Any] | None:
        """The part of a plan shown natively (a dry run, a join into a running sandbox): the
        environment and the bind come from it."""
        choice = plan.wayland
        return WaylandAccess(choice.socket).part() if choice is not None and choice.native else None

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
        return [f"Wayland:  the compositor's own socket {self.socket}, bound alone (idmapped) "
                f"as {INSIDE_SOCKET}: no X display"]
