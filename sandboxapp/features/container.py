"""What the sandbox has of its own inside the container: a session bus, and its network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandboxapp.features.base import Feature
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


@dataclass(frozen=True)
class SessionBus(Feature):
    """session_bus = true: a bus inside, never the user's."""

    @classmethod
    def from_part(cls, plan: LaunchPlan, part: Any) -> SessionBus | None:
        return cls() if plan.profile.sandbox.session_bus else None

    def env(self) -> list[tuple[str, str]]:
        return [("DBUS_SESSION_BUS_ADDRESS", SESSION_BUS)]

    def wrap(self, command: tuple[str, ...]) -> tuple[str, ...]:
        return (*SESSION_BUS_WRAPPER, *command)

    def describe(self) -> list[str]:
        return ["D-Bus:    a session bus of its own inside, not yours"]


@dataclass(frozen=True)
class NetworkAccess(Feature):
    mode: Network

    @classmethod
    def from_part(cls, plan: LaunchPlan, part: Any) -> NetworkAccess:
        return cls(plan.profile.sandbox.network)

    def private_network(self) -> bool:
        return self.mode is Network.NONE

    def describe(self) -> list[str]:
        return [f"network:  {self.mode.value}"]
