"""The root side of a launch, as the session side (launcher.py) reaches it: in this process when
sandboxapp runs as root (container.py, join.py), through the privileged helper that `sandboxapp
setup` installs when a desktop user launches (sudo, one narrow entry point). Both do the same
things in the same order; only the way differs, and it is written here once for each.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from sandboxapp.command import Relay, base_env, run_without_terminal
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features import Feature, helper_request
from sandboxapp.features.request import Action
from sandboxapp.fs import nofollow
from sandboxapp.fs.safepath import DesktopUser, open_for_reading
from sandboxapp.launch.helperclient import PendingHelper, helper_argv
from sandboxapp.launch.supervisor import Supervisor
from sandboxapp.output import TextSink
from sandboxapp.plan import LaunchPlan, with_handed_at
from sandboxapp.system.control import Word
from sandboxapp.system.handed import cannot_hand

if TYPE_CHECKING:
    from sandboxapp.launch.container import ContainerSide, Started

# The files a launch is handed, each open for reading as the user may, with its name inside.
Opened = tuple[tuple[int, str], ...]


def open_for_sandbox(host: Path, user: DesktopUser) -> int:
    """A file the user hands the sandbox, opened for reading as the user may (root, acting
    for a user, opens only the user's own files, without following their symlinks)."""
    try:
        return open_for_reading(host, user)
    except OSError as exc:
        # A symlink is never followed: the sandbox may have planted it where the user looks
        # (its downloads directory), aimed at a file of theirs.
        if exc.errno == errno.ELOOP:
            raise cannot_hand(host, "it is a symlink", ExitStatus.USAGE,
                              hint="name the file it points to") from None
        raise cannot_hand(host, exc.strerror or "", ExitStatus.USAGE) from None
    except nofollow.Refused as exc:
        raise cannot_hand(host, exc.why, ExitStatus.USAGE) from None


def open_handed(stack: ExitStack, plan: LaunchPlan, user: DesktopUser) -> Opened:
    """The files the command line hands the sandbox, with their names inside."""
    opened = []
    for handed in plan.handed:
        fd = open_for_sandbox(handed.host, user)
        stack.callback(os.close, fd)
        opened.append((fd, handed.inside.name))
    return tuple(opened)


class RootSide(Protocol):
    """What the session side asks of the root side: start, open_gate, then supervise (and
    hand, from any thread, while the app runs); or, where its profile runs already, join."""

    def start(self, stack: ExitStack, plan: LaunchPlan, features: tuple[Feature, ...]) -> None:
        """Start the container with the app held at its gate, and the plan's files handed."""

    def open_gate(self) -> None:
        """The grants are made: the app starts."""

    def supervise(self, ask_to_quit: Callable[[], bool]) -> int:
        """Until the app ends (asked to quit the way its windows are, where it must stop):
        its exit status."""

    def hand(self, fd: int, host: Path) -> PurePosixPath:
        """Hand this launch's running sandbox the file open as fd; its path inside."""

    def join(self, plan: LaunchPlan) -> int:
        """Run the plan's command inside the sandbox another launch of its profile runs,
        handed the plan's files first (the running sandbox numbers them its way, and the
        command names each where it went)."""


class InProcess:
    """Root's launch: the container side runs in this process."""

    def __init__(self, supervisor: Supervisor, user: DesktopUser, stderr: TextSink,
                 relay: Relay) -> None:
        self.supervisor = supervisor
        self.user = user
        self.stderr = stderr
        self.relay = relay
        self.side: ContainerSide | None = None
        self.started: Started | None = None

    def start(self, stack: ExitStack, plan: LaunchPlan, features: tuple[Feature, ...]) -> None:
        # A desktop user's launcher leaves this to the helper, and need not load it.
        from sandboxapp.launch.container import ContainerRequest, ContainerSide

        request = ContainerRequest(plan, self.user, trusted_profile=True, features=features,
                                   handed=open_handed(stack, plan, self.user))
        self.side = ContainerSide(self.supervisor, request, self.stderr, relay=self.relay)
        self.started = self.side.start(stack)

    def open_gate(self) -> None:
        from sandboxapp.launch.container import open_gate

        assert self.started is not None
        open_gate(self.started)

    def supervise(self, ask_to_quit: Callable[[], bool]) -> int:
        assert self.side is not None and self.started is not None
        return self.side.supervise(self.started, ask_to_quit)

    def hand(self, fd: int, host: Path) -> PurePosixPath:
        if self.side is None:
            raise cannot_hand(host, "the sandbox has not started")
        return self.side.hand(fd, host.name)

    def join(self, plan: LaunchPlan) -> int:
        from sandboxapp.launch.join import join

        with ExitStack() as stack:
            return join(self.supervisor.run_dir, plan, self.user,
                        open_handed(stack, plan, self.user))


class ThroughHelper:
    """A desktop user's launch: the helper started ahead takes the request, starts the
    container, its app at the gate, and opens the gate when this launcher says "open" on the
    control channel."""

    def __init__(self, helper: PendingHelper, supervisor: Supervisor, user: DesktopUser,
                 data_home: Path, environ: Mapping[str, str], stderr: TextSink,
                 relay: Relay) -> None:
        self.helper = helper
        self.supervisor = supervisor
        self.user = user
        self.data_home = data_home
        self.environ = environ
        self.stderr = stderr
        self.relay = relay
        self.process: subprocess.Popen[str] | None = None

    def start(self, stack: ExitStack, plan: LaunchPlan, features: tuple[Feature, ...]) -> None:
        handed = open_handed(stack, plan, self.user)
        request = helper_request(plan, Action.LAUNCH, self.data_home, features)
        process = self.helper.send(request.to_json(), tuple(fd for fd, _ in handed))
        assert process.stderr is not None and process.stdout is not None
        self.relay.raw(process.stdout, sys.stdout.fileno())
        self.relay.lines(process.stderr, self.stderr)
        stack.callback(self._end, process)
        self.process = process

    def _end(self, process: subprocess.Popen[str]) -> None:
        """Should this launch give up before the app runs (a grant failed), the control
        channel ends: the helper takes back the container side, and is waited for."""
        self.helper.control.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)

    def open_gate(self) -> None:
        # A helper that is gone already (sudo refused, nspawn failed) said why on its error
        # output; its exit status is the launch's.
        self.helper.say(Word.OPEN)

    def supervise(self, ask_to_quit: Callable[[], bool]) -> int:
        helper = self.helper
        assert self.process is not None

        def ask_to_stop() -> None:
            # The helper stops the app gracefully when the channel says so or ends, giving it
            # the grace this launcher was asked for.
            helper.say(Word.STOP, str(self.supervisor.grace))

        try:
            return self.supervisor.wait(self.process, on_stop=ask_to_stop,
                                        on_timeout=helper.control.close,
                                        ask_to_quit=ask_to_quit)
        finally:
            helper.control.close()
            self.relay.join()

    def hand(self, fd: int, host: Path) -> PurePosixPath:
        try:
            self.helper.control.send(Word.FILE, host.name, (fd,))
            answer = self.helper.control.receive()
        except OSError:
            answer = None
        if answer is not None and answer.word is Word.HANDED:
            return PurePosixPath(answer.text)
        raise cannot_hand(host, answer.text if answer is not None and answer.word is
                          Word.REFUSED else "the sandbox has stopped")

    def _hand_to_running(self, plan: LaunchPlan, opened: Opened) -> list[PurePosixPath]:
        """The helper started ahead hands them (a request of its own: "hand"), and answers
        where each went."""
        helper = self.helper
        process = helper.send(helper_request(plan, Action.HAND, self.data_home).to_json(),
                              tuple(fd for fd, _ in opened))
        went: list[PurePosixPath] = []
        try:
            for _, name in opened:
                answer = helper.control.receive()
                if answer is None or answer.word is not Word.HANDED:
                    if answer is not None:
                        why = answer.text
                    else:  # what the helper said on its way out
                        assert process.stderr is not None
                        said = process.stderr.read().strip().splitlines()
                        why = said[-1].removeprefix("sandboxapp: ") if said else "it ended"
                    raise SandboxError(f"cannot hand {name} to the running sandbox: {why}",
                                       status=ExitStatus.LAUNCHER)
                went.append(PurePosixPath(answer.text))
        finally:
            helper.control.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        return went

    def join(self, plan: LaunchPlan) -> int:
        if plan.handed:
            with ExitStack() as stack:
                went = self._hand_to_running(plan, open_handed(stack, plan, self.user))
            plan = with_handed_at(plan, went)
        # A fresh helper: the joined command gets the launcher's own input, through a pipe.
        argv = helper_argv(helper_request(plan, Action.JOIN, self.data_home).to_json())
        return run_without_terminal(argv, base_env({"TERM": self.environ.get("TERM", "dumb")}))
