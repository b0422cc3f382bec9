"""The privileged helper as a desktop user's launcher reaches it: through sudo, started before
the launcher does anything else, so that the helper's interpreter loads while the launcher reads
the profile and makes the grants (there are two processes to start, and usually two cores).

The helper then waits for its request (request.py): one line, the JSON list of its command-line
words, the same words it would otherwise get as arguments and trusts no more than those. After
that line, its input is the stop channel ("stop", or its end). A launcher that gives up before
sending a request closes the input, and the helper leaves without doing anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
from collections.abc import Mapping, Sequence

from sandboxapp.command import base_env, program_exists, spawn
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.paths import HELPER_PATH
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


def helper_argv(words: Sequence[str]) -> list[str]:
    return ["sudo", "--non-interactive", HELPER_PATH, *words]


class PendingHelper:
    """A helper started ahead of its request."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        check_helper_access()
        self.process = spawn(
            helper_argv([PENDING]), env=base_env({"TERM": environ.get("TERM", "dumb")}),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.sent = False

    def send(self, words: Sequence[str]) -> subprocess.Popen[str]:
        """Hand the helper its request; the process, whose input is now the stop channel."""
        assert self.process.stdin is not None
        self.sent = True
        # A helper that is gone already (sudo refused) says why on its error output, which the
        # caller forwards; its exit status is the launch's.
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.write(json.dumps(list(words)) + "\n")
            self.process.stdin.flush()
        return self.process

    def abandon(self) -> None:
        """No request after all: the helper leaves when its input ends."""
        if self.sent:
            return
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
