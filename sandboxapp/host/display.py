"""DISPLAY values: which local X server a profile's sandbox should reach, and how the user
reaches it (the grants themselves: x11.py, trusted; nested.py, a server of the sandbox's own)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sandboxapp.errors import ExitStatus, SandboxError

X11_SOCKET_DIR = Path("/tmp/.X11-unix")
# The sandbox's own Xauthority file, in its X directory (nested.py writes it).
AUTH_FILE = "Xauthority"
# Xephyr answers its first client 0.14 s after it starts here; one that has not said its
# display number (nor made its socket) by then is not coming.
NESTED_START_TIMEOUT = 10.0
_DISPLAY = re.compile(r"(?P<host>[^:]*):(?P<number>\d+)(?:\.(?P<screen>\d+))?")


@dataclass(frozen=True)
class Display:
    number: int
    screen: int = 0

    @property
    def socket(self) -> Path:
        return X11_SOCKET_DIR / f"X{self.number}"

    @property
    def name(self) -> str:
        """The DISPLAY value inside the sandbox: the same socket path, so the same number."""
        return f":{self.number}" + (f".{self.screen}" if self.screen else "")


def parse_display(value: str | None) -> Display:
    """Parse a local DISPLAY (":0", ":0.0", "unix:0"); remote and TCP displays are refused,
    since only a local socket can be bound into a sandbox."""
    if not value:
        raise SandboxError(
            "DISPLAY is not set, and this profile needs the X display",
            hint="run it from a graphical session, or set DISPLAY (e.g. DISPLAY=:0)",
            status=ExitStatus.LAUNCHER,
        )
    match = _DISPLAY.fullmatch(value)
    if match is None:
        raise SandboxError(
            f"DISPLAY={value!r} is not a display name; allowed: ':N', ':N.S' or 'unix:N'",
            status=ExitStatus.LAUNCHER,
        )
    if match["host"] not in ("", "unix"):
        raise SandboxError(
            f"DISPLAY={value!r} is a network display; allowed: a local display (':N', 'unix:N')",
            hint="sandboxapp binds the display's local socket into the sandbox",
            status=ExitStatus.LAUNCHER,
        )
    return Display(int(match["number"]), int(match["screen"] or 0))


@dataclass(frozen=True)
class XAccess:
    """How to reach the user's X server: the display and the cookie file the user has."""

    display: Display
    xauthority: str | None

    @classmethod
    def from_environment(cls, display: Display, environ: Mapping[str, str]) -> XAccess:
        return cls(display, environ.get("XAUTHORITY") or None)

    def cookie_file(self) -> Path | None:
        if self.xauthority:
            return Path(self.xauthority)
        home = os.environ.get("HOME")
        return Path(home) / ".Xauthority" if home else None
