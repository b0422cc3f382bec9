"""The X display: an X server of the sandbox's own, nested in the user's display (x11 = true,
host/nested.py), or a trusted authorization of its own on the user's display (x11 = "trusted",
host/xtrust.py); the socket of the display the sandbox uses, read-only, and its X directory
with the cookie."""

from __future__ import annotations

import stat
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features.base import CheckedPath, Feature, Session, Source
from sandboxapp.features.request import absolute_path, refused
from sandboxapp.fs.safepath import ensure_user_dir
from sandboxapp.host.display import AUTH_FILE, NESTED_START_TIMEOUT, Display, XAccess
from sandboxapp.profile.model import X11Access
from sandboxapp.system.nspawn import Bind
from sandboxapp.undo.entries import NestedX11Entry, TrustedX11Entry

if TYPE_CHECKING:
    from sandboxapp.plan import LaunchPlan

# The X clients (host/x11.py, host/nested.py and python-xlib) are imported only where they are
# used: a profile without a display never loads them.

# The sandbox's X directory (its nested server's Xauthority file): named X11_DIR beside the
# sound directories on the host (no profile is named so), bound read-only here inside.
X11_DIR = ".x11"
X11_CONTAINER_DIR = PurePosixPath("/run/sandboxapp/x11")
# The container has its own IPC namespace, so MIT-SHM to an X server outside cannot work:
# these tell Qt and other toolkits not to try (the same variables x11docker sets).
NO_MITSHM_ENV = (("QT_X11_NO_MITSHM", "1"), ("_X11_NO_MITSHM", "1"), ("_MITSHM", "0"))


def window_look(plan: LaunchPlan) -> Any:
    """What the desktop sees of a sandbox's window: its title and class from the profile's
    name (the menu entry's StartupWMClass is the same class), the program's icon from its
    pristine image, as its menu entry has it."""
    from sandboxapp.host.nested import WindowLook, wm_class

    name = plan.profile.name
    image = plan.image

    def icons() -> list[Path]:
        from sandboxapp.host.desktop import program_icons

        return [path for _, path in program_icons(plan.profile, image.rootfs)] if image else []

    return WindowLook(title=f"{name} (sandbox)", instance=wm_class(name), klass=wm_class(name),
                      icons=icons)


@dataclass(frozen=True)
class DisplayAccess(Feature):
    # The display the sandbox uses: its own nested one (x11 = true), or the user's (trusted).
    display: Display
    trusted: bool
    # The user's directory holding the sandbox's Xauthority file (its nested server's cookie,
    # or its trusted authorization).
    x11_dir: Path
    # The session side's: how the user reaches the user's server, and the undo entry of a
    # trusted authorization (made in grant).
    access: XAccess | None = None
    entry: TrustedX11Entry | None = None
    # x11 = true: the nested server, started in prepare, waited for in grant.
    nested: Any = None

    @classmethod
    def prepare(cls, session: Session, stack: ExitStack) -> DisplayAccess | None:
        """The user's display's socket checked and the X directory made; for x11 = true the
        nested server started in it, recorded with their undo first (its start, a tenth of a
        second, overlaps the privileged helper's and nspawn's: grant waits for it)."""
        plan = session.plan
        display = plan.display
        if display is None:
            return None
        assert plan.image is not None
        try:
            is_socket = stat.S_ISSOCK(display.socket.stat().st_mode)
        except OSError:
            is_socket = False
        if not is_socket:
            raise SandboxError(
                f"the X display {display.name} has no socket at {display.socket}",
                hint="is the X server running? check DISPLAY",
                status=ExitStatus.LAUNCHER,
            )
        access = XAccess.from_environment(display, session.environ)
        directory = session.host_dir(X11_DIR)
        if plan.profile.sandbox.x11 is X11Access.TRUSTED:
            trusted = session.supervisor.add(stack, TrustedX11Entry(
                str(directory), session.user.uid, display.number, access.xauthority))
            ensure_user_dir(directory, session.user, 0o700, exact_mode=True)
            return cls(display, True, directory, access, trusted)
        from sandboxapp.host.clipboard import Directions
        from sandboxapp.host.nested import nested_display
        from sandboxapp.system.procstat import start_ticks

        entry = session.supervisor.add(stack, NestedX11Entry(str(directory), session.user.uid))
        ensure_user_dir(directory, session.user, 0o700, exact_mode=True)
        # Root launching for a desktop user runs the nested server as that user; the cookie
        # file is the user's either way (bound with rootidmap: the container root's own there).
        nested = stack.enter_context(nested_display(
            access, directory, window_look(plan),
            Directions.of(plan.profile.sandbox.clipboard), session.user.acted_for()))

        def report() -> None:
            for line in nested.report():
                session.warn(line)

        stack.callback(report)
        record = session.supervisor.record
        assert record is not None
        started = start_ticks(nested.process.pid)
        record.update(entry, display=nested.display.number,
                      server=[nested.process.pid, started] if started is not None else None)
        return cls(nested.display, False, directory, access, nested=nested)

    def checked_paths(self, trusted_profile: bool) -> list[CheckedPath]:
        # The user's display's socket may be root's (Xorg's); a nested server's is the user's.
        # The nested server's socket appears as the server starts, while the container does.
        return [CheckedPath(self.x11_dir, False, "X directory", stat.S_IFDIR),
                CheckedPath(self.display.socket, self.trusted, "X display socket", stat.S_IFSOCK,
                            appears_within=0.0 if self.trusted else NESTED_START_TIMEOUT)]

    def binds(self, source: Source) -> list[Bind]:
        # Only the display's own socket, read-only: not the whole socket directory; and the
        # user's X directory, its files the container root's own (Firefox will not read an
        # XAUTHORITY owned by nobody).
        return [Bind(source(self.display.socket), str(self.display.socket)),
                Bind(source(self.x11_dir), str(X11_CONTAINER_DIR), root_idmap=True)]

    def env(self) -> list[tuple[str, str]]:
        return [("DISPLAY", self.display.name), *NO_MITSHM_ENV,
                ("XAUTHORITY", str(X11_CONTAINER_DIR / AUTH_FILE))]

    KEY = "display"

    def part(self) -> dict[str, Any]:
        return {"display": self.display.number, "x11_dir": str(self.x11_dir)}

    @staticmethod
    def naming(number: int, x11_dir: PurePosixPath) -> dict[str, Any]:
        """A part that only names the display (features.naming): the environment comes
        from it, and nothing is made for it."""
        return {"display": number, "x11_dir": str(x11_dir)}

    @staticmethod
    def number_in(part: Any) -> int | None:
        """The display a request's part names (the plan's display comes from it)."""
        if part is None:
            return None
        if not isinstance(part, dict) or set(part) != {"display", "x11_dir"}:
            raise refused("the display's part is not {display, x11_dir}")
        number = part["display"]
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < 1 << 16:
            raise refused("the display is not a display's number")
        return number

    @classmethod
    def from_part(cls, plan: LaunchPlan, part: Any) -> DisplayAccess | None:
        if plan.display is None:
            return None
        if part is None or cls.number_in(part) != plan.display.number:
            raise SandboxError("the profile needs the X display, and none was given",
                               status=ExitStatus.LAUNCHER)
        return cls(plan.display, plan.profile.sandbox.x11 is X11Access.TRUSTED,
                   absolute_path(part["x11_dir"], "x11_dir"))

    def describe(self) -> list[str]:
        if self.trusted:
            return [f"X11:      TRUSTED (x11 = \"trusted\"): an authorization of its own on "
                    f"{self.display.name} (SECURITY extension; refused where there is none, "
                    "as on Xwayland), revoked at exit, as a client that can read and type into "
                    f"every window; bind {self.display.socket} read-only"]
        return [f"X11:      a display of its own (Xephyr) in a window on {self.display.name}, "
                "its socket and cookie the sandbox's alone, ended at exit; the sandbox never "
                f"connects to {self.display.name} (the nested display's number is taken at "
                "launch: the command below names the socket of the display it is taken for)"]

    def has_focus(self) -> bool | None:
        # The nested server's window on the user's display knows; a trusted display's
        # windows are the program's own, which the launcher does not watch.
        return self.nested.focused if self.nested is not None else None

    def ask_to_close(self) -> bool:
        # The nested server is the launcher's: its windows are asked, as a window manager
        # asks them (the user's display, a trusted one, is not the launcher's to act on).
        return self.nested is not None and self.nested.ask_to_close()

    def grant(self, session: Session, stack: ExitStack) -> None:
        if not self.trusted:
            self.nested.wait_ready()  # started in prepare: it came up as nspawn started
            return
        assert self.access is not None and self.entry is not None
        from sandboxapp.host import xtrust
        from sandboxapp.host.xconnection import write_cookie_file

        session.warn(f'{session.plan.profile.name} has x11 = "trusted": it can read and type '
                     "into every window on your display while it runs")
        record = session.supervisor.record
        assert record is not None
        made = xtrust.generate(self.access)
        record.update(self.entry, authid=made.authid,
                      server=list(made.server) if made.server is not None else None)
        write_cookie_file(self.x11_dir, made.cookie, session.user)
