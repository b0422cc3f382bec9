"""The one exception type sandboxapp raises for anything a user should read."""

from __future__ import annotations

import contextlib
import enum
import os
import sys
from typing import NoReturn


class ExitStatus(enum.IntEnum):
    OK = 0
    # Something went wrong that is not the user's input (a build, a system command).
    FAILURE = 1
    # Bad input: command line, profile file, profile name.
    USAGE = 2
    # podman-run conventions for launches: the launcher itself failed, the
    # command was found but could not be executed, the command was not found.
    LAUNCHER = 125
    NOT_EXECUTABLE = 126
    NOT_FOUND = 127


class SandboxError(Exception):
    """An error with a one-line message, an optional hint and the exit status to use.

    The command line prints these; nothing else in the package prints.
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int = ExitStatus.FAILURE,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.status = status
        # Longer text (the tail of a failed command's output) shown under the message.
        self.detail = detail

    def __str__(self) -> str:
        return self.message



def finish(status: int) -> NoReturn:
    """Leave with status at once, after flushing the standard streams. The interpreter's own
    shutdown tears down every imported module, about 14 ms that every launch would pay; by the
    time a command returns its status, everything of ours is written and closed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)
