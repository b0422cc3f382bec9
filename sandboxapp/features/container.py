"""What the sandbox has of its own inside the container: a session bus, and its network."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features.base import Feature, Session
from sandboxapp.host.portal import PORTAL_SOCKET
from sandboxapp.profile.model import Network

if TYPE_CHECKING:
    from sandboxapp.plan import LaunchPlan

# The sandbox's own session bus, started before the app (dbus-daemon --fork returns once the
# bus is ready) and gone with the container.
SESSION_BUS = "unix:path=/run/sandboxapp-session-bus"
SESSION_BUS_WRAPPER = (
    "/bin/sh", "-c",
    f"dbus-daemon --session --address={SESSION_BUS} --fork --nopidfile --syslog-only"
    ' && exec "$@"',
    "sh",
)
# With the file chooser (features/portal.py), the bus also listens in a directory the launcher
# reaches from the host, PORTAL_DIR. The container's root runs the bus, and the launcher is
# nobody to it (its UID is not in the container's), so the bus lets a client in that names no
# UID at all (ANONYMOUS): on the sandbox's own bus, where every program is the container's
# root already, that lets nobody in who was not.
PORTAL_DIR = "/run/sandboxapp/portal"
PORTAL_BUS_CONFIG = f"""<busconfig>
  <type>session</type>
  <listen>{SESSION_BUS}</listen>
  <listen>unix:path={PORTAL_DIR}/{PORTAL_SOCKET}</listen>
  <auth>EXTERNAL</auth>
  <auth>ANONYMOUS</auth>
  <allow_anonymous/>
  <standard_session_servicedirs/>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""
PORTAL_BUS_WRAPPER = (
    "/bin/sh", "-c",
    'printf %s "$1" > /run/sandboxapp-session-bus.conf && shift && '
    "dbus-daemon --config-file=/run/sandboxapp-session-bus.conf --fork --nopidfile "
    '--syslog-only && exec "$@"',
    "sh", PORTAL_BUS_CONFIG,
)


@dataclass(frozen=True)
class SessionBus(Feature):
    """session_bus = true: a bus inside, never the user's."""

    portal: bool = False

    @classmethod
    def from_part(cls, plan: LaunchPlan, part: Any) -> SessionBus | None:
        sandbox = plan.profile.sandbox
        return cls(sandbox.file_chooser) if sandbox.session_bus else None

    def env(self) -> list[tuple[str, str]]:
        return [("DBUS_SESSION_BUS_ADDRESS", SESSION_BUS)]

    def wrap(self, command: tuple[str, ...]) -> tuple[str, ...]:
        return (*(PORTAL_BUS_WRAPPER if self.portal else SESSION_BUS_WRAPPER), *command)

    def describe(self) -> list[str]:
        return ["D-Bus:    a session bus of its own inside, not yours"]


def _some(displays: list[str], shown: int = 3) -> str:
    """A few displays by name, and how many more (a local program may hold thousands)."""
    more = len(displays) - shown
    return ", ".join(displays[:shown]) + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class NetworkAccess(Feature):
    """network = "host" or "none". The host's network namespace holds the abstract sockets of
    the user's X server: a sandbox in it reaches that server without any bind, so its launch
    is refused where the server lets such a client in without a cookie (host/x11.py)."""

    mode: Network

    @classmethod
    def from_part(cls, plan: LaunchPlan, part: Any) -> NetworkAccess:
        return cls(plan.profile.sandbox.network)

    def private_network(self) -> bool:
        return self.mode is Network.NONE

    def describe(self) -> list[str]:
        return [f"network:  {self.mode.value}"]

    def check_as_sandbox(self, uid: int) -> Callable[[], None] | None:
        """Every X server listening on an abstract name, tried as the sandbox's UID without a
        cookie (whatever its host list says, in whatever form: the server's word counts)."""
        if self.mode is not Network.HOST:
            return None
        from sandboxapp.host import x11

        probe = x11.start_probe(uid)
        if probe is None:
            return None

        def verdict() -> None:
            found = x11.probe_result(probe)
            if found.admitted:
                raise SandboxError(
                    f"the X display {_some(found.admitted)} lets the sandbox in without a "
                    "cookie, and the profile has network = \"host\": it would reach that "
                    "display through its abstract socket",
                    hint="close that display's access (xhost -; xhost -local:; an entry for "
                         'the sandbox\'s UID), or give the profile network = "none"',
                    status=ExitStatus.LAUNCHER)
            if found.silent:
                # Not answering is not saying no: a busy server may let it in later.
                raise SandboxError(
                    f"the X display {_some(found.silent)} did not answer within "
                    f"{x11.PROBE_BUDGET:g} s, so whether it lets a sandbox with network = "
                    '"host" in without a cookie cannot be told',
                    hint="a program holds that display's abstract socket without serving it; "
                         'try again once it answers, or give the profile network = "none"',
                    status=ExitStatus.LAUNCHER)
        return verdict

    def grant(self, session: Session, stack: ExitStack) -> None:
        # The user's display's host list, read with the user's cookie: an entry for any UID of
        # the sandbox's block (the probe tries only the first).
        if self.mode is not Network.HOST or session.plan.image is None:
            return
        from sandboxapp.host import x11
        from sandboxapp.host.display import XAccess, parse_display

        try:
            display = parse_display(session.environ.get("DISPLAY"))
        except SandboxError:
            return  # no display of the user's to check (one named badly is refused elsewhere)
        ids = session.plan.image.meta.uid_range
        try:
            admission = x11.cookieless_admission(
                XAccess.from_environment(display, session.environ), range(ids.base, ids.last + 1))
        except SandboxError:
            if session.plan.display is not None:
                raise
            return  # a DISPLAY left from another session: a program without a display goes on
        if admission is not None:
            raise SandboxError(
                f"your X display {display.name} lets programs in without a cookie "
                f"({admission}), and {session.plan.profile.name} has network = \"host\": it "
                "would reach your display through its abstract socket",
                hint="remove that entry (xhost -local: or xhost -si:localuser:NAME), or give "
                     'the profile network = "none"', status=ExitStatus.LAUNCHER)
