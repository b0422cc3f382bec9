"""The privileged helper as a desktop user's launcher reaches it: through sudo, started before
the launcher does anything else, so that the helper's interpreter loads while the launcher reads
the profile and makes the grants (there are two processes to start, and usually two cores).

Its input is the launch's control channel (system/control.py), on which it waits for its request
(features/request.py, the same JSON it would otherwise get as its argument, trusted no more
than that); then the launcher says "open" and "stop" on it, or closes it. A launcher that gives
up before sending a request closes it, and the helper leaves without doing anything.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from collections.abc import Mapping

from sandboxapp.command import base_env, program_exists, spawn
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.paths import HELPER_PATH
from sandboxapp.system.control import ControlChannel, Word
from sandboxapp.system.membership import membership_problem

PENDING = "pending"  # the helper's action: read the request from the input


def check_helper_access() -> None:
    """A desktop user's launch needs sudo, the helper and membership of the group: say which
    is missing, with the command that fixes it."""
    if not program_exists("sudo"):
        raise SandboxError("sudo is not installed: a desktop user's launch goes through it",
                           hint="apt-get install sudo, then: sudo sandboxapp setup",
                           status=ExitStatus.LAUNCHER)
    problem = membership_problem(pwd.getpwuid(os.getuid()).pw_name)
    if problem is not None:
        what, fix = problem
        raise SandboxError(what, hint=f"run: {fix}", status=ExitStatus.LAUNCHER)


def helper_argv(argument: str) -> list[str]:
    """The helper through sudo, with its one argument: a request, or PENDING."""
    return ["sudo", "--non-interactive", HELPER_PATH, argument]


class PendingHelper:
    """A helper started ahead of its request."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        check_helper_access()
        self.control, theirs = ControlChannel.pair()
        try:
            self.process = spawn(
                helper_argv(PENDING), env=base_env({"TERM": environ.get("TERM", "dumb")}),
                stdin=theirs.fileno(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
        except BaseException:
            self.control.close()
            raise
        finally:
            theirs.close()  # the helper's now: its end closing is the channel's end
        self.sent = False

    def send(self, request: str, fds: tuple[int, ...] = ()) -> subprocess.Popen[str]:
        """Hand the helper its request (and the files it hands the sandbox); the process
        (which then listens on self.control)."""
        self.sent = True
        # A helper that is gone already (sudo refused) says why on its error output, which the
        # caller forwards; its exit status is the launch's.
        with contextlib.suppress(OSError):
            self.control.send(Word.REQUEST, request, fds)
        return self.process

    def say(self, word: Word, text: str = "") -> None:
        """Say "open" or "stop" to the helper; one that is gone has nothing to hear."""
        with contextlib.suppress(OSError):
            self.control.send(word, text)

    def abandon(self) -> None:
        """No request after all: the helper leaves when the channel ends."""
        if self.sent:
            return
        self.control.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
