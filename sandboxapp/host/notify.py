"""Telling a user who has no terminal: desktop notifications, and a log of every run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import IO

from sandboxapp.command import base_env, program_exists, run
from sandboxapp.fs.safepath import DesktopUser, create_user_file, ensure_user_dir, open_user_path

KEEP_LOGS = 10
NOTIFY_TIMEOUT = 5.0


def has_session_bus(environ: Mapping[str, str]) -> bool:
    if environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return True
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    return bool(runtime) and Path(runtime, "bus").exists()


def notify(environ: Mapping[str, str], summary: str, body: str) -> bool:
    """Send a desktop notification (notify-send, or gdbus); whether one went out."""
    if not has_session_bus(environ):
        return False
    keep = ("DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "DISPLAY", "WAYLAND_DISPLAY", "HOME")
    env = base_env({k: environ[k] for k in keep if environ.get(k)})
    if program_exists("notify-send"):
        argv = ["notify-send", "--app-name=sandboxapp", "--urgency=critical",
                "--icon=dialog-error", summary, body]
    elif program_exists("gdbus"):
        argv = ["gdbus", "call", "--session", "--dest=org.freedesktop.Notifications",
                "--object-path=/org/freedesktop/Notifications",
                "--method=org.freedesktop.Notifications.Notify", "sandboxapp", "0",
                "dialog-error", summary, body, "[]", "{}", "-1"]
    else:
        return False
    return run(argv, env=env, check=False, timeout=NOTIFY_TIMEOUT).returncode == 0


def _prune(held: int) -> None:
    """Room for a new log among the newest KEEP_LOGS."""
    logs = sorted(name for name in os.listdir(f"/proc/self/fd/{held}") if name.endswith(".log"))
    for old in logs[:len(logs) - KEEP_LOGS + 1]:
        with contextlib.suppress(OSError):
            os.unlink(old, dir_fd=held)


class RunLog:
    """`$XDG_STATE_HOME/sandboxapp/PROFILE/<time>.log`: what a run printed, kept for the user
    who started it from a menu; the newest KEEP_LOGS are kept."""

    def __init__(self, state_home: Path, profile: str, user: DesktopUser) -> None:
        self.directory = state_home / "sandboxapp" / profile
        ensure_user_dir(self.directory, user)
        # Root, acting for the user, prunes and writes through the directory as opened without
        # following symlinks: one swapped in meanwhile sends neither into another directory.
        held = open_user_path(self.directory, user)
        try:
            _prune(held)
            name = datetime.now().strftime("%Y%m%d-%H%M%S-%f") + ".log"
            fd = create_user_file(held, name, user, 0o600)
        finally:
            os.close(held)
        self.path = self.directory / name
        self.stream: IO[str] = os.fdopen(fd, "w", encoding="utf-8", errors="replace")

    def close(self) -> None:
        self.stream.close()


class Tee:
    """A text stream that writes to a terminal (or whatever stderr is) and to a log."""

    def __init__(self, *streams: IO[str]) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            with contextlib.suppress(OSError, ValueError):
                stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()

    def isatty(self) -> bool:
        return False
