"""The X display: an untrusted authorization of the sandbox's own (x11 = true), or the image's
first UID on the host list (x11 = "trusted"), and the display's socket, read-only."""

from __future__ import annotations

import contextlib
import os
import stat
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features.base import CheckedPath, Feature, Session, Source
from sandboxapp.features.request import absolute_path, refused
from sandboxapp.fs.safepath import ensure_user_dir
from sandboxapp.host.display import AUTH_FILE, Display, XAccess
from sandboxapp.profile.model import X11Access
from sandboxapp.system.nspawn import Bind
from sandboxapp.undo.entries import TrustedX11Entry, X11AuthEntry

if TYPE_CHECKING:
    from sandboxapp.plan import LaunchPlan

# The X clients (host/x11.py, host/x11auth.py and python-xlib) are imported by grant, once
# nspawn is starting: their load is hidden behind the container's start.

# The sandbox's X directory (its Xauthority file, host/x11auth.py): named X11_DIR beside the sound
# directories on the host (no profile is named so), bound read-only here inside.
X11_DIR = ".x11"
X11_CONTAINER_DIR = PurePosixPath("/run/sandboxapp/x11")
# The container has its own IPC namespace, so MIT-SHM to the host's X server cannot work:
# these tell Qt and other toolkits not to try (the same variables x11docker sets).
NO_MITSHM_ENV = (("QT_X11_NO_MITSHM", "1"), ("_X11_NO_MITSHM", "1"), ("_MITSHM", "0"))


@dataclass(frozen=True)
class DisplayAccess(Feature):
    display: Display
    trusted: bool
    # The user's directory holding the untrusted authorization's Xauthority file.
    x11_dir: Path | None
    # The image's first UID, the host-list entry of a trusted display (None: no image yet).
    uid_base: int | None
    # The session side's: how the user reaches the server, and the authorization's entry.
    access: XAccess | None = None
    entry: X11AuthEntry | None = None

    @classmethod
    def prepare(cls, session: Session, stack: ExitStack) -> DisplayAccess | None:
        """The display's socket checked, and the X directory made, recorded with its undo
        first; the authorization itself is made while the container starts (grant)."""
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
        trusted = plan.profile.sandbox.x11 is X11Access.TRUSTED
        uid_base = plan.image.meta.uid_base
        if trusted:
            return cls(display, True, None, uid_base, access)
        directory = session.host_dir(X11_DIR)
        entry = session.supervisor.add(stack, X11AuthEntry(
            display.number, access.xauthority, str(directory), session.user.uid))
        ensure_user_dir(directory, session.user, 0o700, exact_mode=True)
        return cls(display, False, directory, uid_base, access, entry)

    def checked_paths(self, trusted_profile: bool) -> list[CheckedPath]:
        paths = [CheckedPath(self.display.socket, True, "X display socket", stat.S_IFSOCK)]
        if self.x11_dir is not None:
            paths.append(CheckedPath(self.x11_dir, False, "X directory", stat.S_IFDIR))
        return paths

    def binds(self, source: Source) -> list[Bind]:
        # Only the display's own socket, read-only: not the whole socket directory.
        binds = [Bind(source(self.display.socket), str(self.display.socket))]
        if self.x11_dir is not None:
            # The user's directory, its files the container root's own (Firefox will not read
            # an XAUTHORITY owned by nobody).
            binds.append(Bind(source(self.x11_dir), str(X11_CONTAINER_DIR), root_idmap=True))
        return binds

    def env(self) -> list[tuple[str, str]]:
        env = [("DISPLAY", self.display.name), *NO_MITSHM_ENV]
        if not self.trusted:
            env.append(("XAUTHORITY", str(X11_CONTAINER_DIR / AUTH_FILE)))
        return env

    KEY = "display"

    def part(self) -> dict[str, Any]:
        return {"display": self.display.number,
                "x11_dir": None if self.x11_dir is None else str(self.x11_dir)}

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
        trusted = plan.profile.sandbox.x11 is X11Access.TRUSTED
        x11_dir = None if part["x11_dir"] is None else absolute_path(part["x11_dir"], "x11_dir")
        if x11_dir is not None and trusted:
            raise SandboxError("an X directory was given, but the profile's display access is "
                               "not x11 = true", status=ExitStatus.LAUNCHER)
        return cls(plan.display, trusted, x11_dir,
                   plan.image.meta.uid_base if plan.image else None)

    def describe(self) -> list[str]:
        if self.trusted:
            uid = "the image's first UID" if self.uid_base is None else str(self.uid_base)
            return [f"X11:      TRUSTED (x11 = \"trusted\"): grant localuser:#{uid} on "
                    f"{self.display.name} while it runs, as a client that can read and type "
                    f"into every window; bind {self.display.socket} read-only"]
        return [f"X11:      an untrusted authorization on {self.display.name} while it runs "
                "(kept from other windows, no XTEST), revoked at exit; bind "
                f"{self.display.socket} read-only"]

    def grant(self, session: Session, stack: ExitStack) -> None:
        assert self.access is not None
        if self.trusted:
            self._grant_trusted(session, stack, self.access)
        else:
            self._grant_untrusted(session, stack, self.access)

    def _grant_trusted(self, session: Session, stack: ExitStack, access: XAccess) -> None:
        from sandboxapp.host import x11

        session.warn(f'{session.plan.profile.name} has x11 = "trusted": it can read and type '
                     "into every window on your display while it runs")
        record = session.supervisor.record
        assert record is not None and self.uid_base is not None
        entry = session.supervisor.add(stack, TrustedX11Entry(
            self.display.number, access.xauthority, self.uid_base))
        if not x11.grant(access, self.uid_base):
            # The user had made this grant: it is theirs, and stays after we exit.
            record.drop(entry)

    def _grant_untrusted(self, session: Session, stack: ExitStack, access: XAccess) -> None:
        from sandboxapp.host import x11auth

        record = session.supervisor.record
        entry = self.entry
        assert record is not None and entry is not None and self.x11_dir is not None
        # The connection that makes the authorization stays open to revoke it at exit.
        display = stack.enter_context(x11auth.connection(access))
        authorization = x11auth.generate(display, access)
        record.update(entry, authid=authorization.authid,
                      server=list(authorization.server) if authorization.server else None)

        def revoke() -> None:
            # Revoked here, the entry's own undo only removes the directory; failing here,
            # that undo tries again over a new connection.
            with contextlib.suppress(SandboxError):
                x11auth.revoke_on(display, authorization.authid)
                if record.holds(entry):
                    record.update(entry, authid=None)

        stack.callback(revoke)
        path = x11auth.write_file(self.x11_dir, self.display.number, authorization.cookie)
        if os.geteuid() == 0:
            # Bound with rootidmap: the user's file is the container root's own there.
            os.chown(path, session.user.uid, session.user.gid)
