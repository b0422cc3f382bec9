"""One launch, as `sandboxapp run` does it.

The session side (the desktop user's: the grants of features/) and the root side (layer, binds,
systemd-nspawn; see container.py) run in one process when sandboxapp runs as root. A desktop
user's launcher does the session side itself and reaches the root side through the privileged
helper that `sandboxapp setup` installs (sudo, one narrow entry point).

Each resource is written to the ledger and its undo registered on the ExitStack *before* it is
made; the undo copes with a thing that was never made.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from sandboxapp.command import Relay, base_env, run_attached, run_without_terminal
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features import Feature, Session, helper_request, prepare_features
from sandboxapp.features.request import Action, HelperRequest
from sandboxapp.fs import nofollow
from sandboxapp.fs.safepath import DesktopUser, open_for_reading
from sandboxapp.launch.helperclient import PendingHelper, helper_argv
from sandboxapp.launch.supervisor import Supervisor
from sandboxapp.output import TextSink
from sandboxapp.paths import Locations
from sandboxapp.plan import LaunchPlan, with_handed_at
from sandboxapp.profile.model import Profile
from sandboxapp.system.control import Word
from sandboxapp.undo.ledger import RunDir

if TYPE_CHECKING:
    from sandboxapp.launch.container import ContainerSide, Started


class Launch:
    def __init__(
        self,
        plan: LaunchPlan,
        locations: Locations,
        environ: Mapping[str, str],
        *,
        warn: Callable[[str], None],
        stderr: TextSink,
        helper: PendingHelper | None = None,
    ) -> None:
        self.plan = plan
        self.helper = helper
        # Set when the profile was running already and this command ran inside it.
        self.joined = False
        self.locations = locations
        self.environ = environ
        self.warn = warn
        self.stderr = stderr
        self.user = DesktopUser.from_environment(environ)
        self.supervisor = Supervisor(RunDir(locations.run_dir), warn)
        # The app's output, through the helper or not: whether there was any.
        self.relay = Relay()
        # Root's launch: the container side, in this process (files are handed through it).
        self.side: ContainerSide | None = None
        self._handing = threading.Lock()
        self.features: tuple[Feature, ...] = ()

    # -- the session side --------------------------------------------------------------------

    def _session(self) -> Session:
        return Session(self.plan, self.user, self.environ, self.supervisor, self.warn,
                       self.locations.run_dir, hand=self.hand_file, focused=self._focused)

    def _focused(self) -> bool | None:
        """Whether the sandbox's window has the user's focus, where a feature can tell."""
        told = [found for feature in self.features
                if (found := feature.has_focus()) is not None]
        return any(told) if told else None

    # -- the root side, here -----------------------------------------------------------------

    def _start_here(self, stack: ExitStack,
                    features: tuple[Feature, ...]) -> tuple[ContainerSide, Started]:
        # A desktop user's launcher leaves this to the helper, and need not load it.
        from sandboxapp.launch.container import ContainerRequest, ContainerSide

        request = ContainerRequest(self.plan, self.user, trusted_profile=True, features=features,
                                   handed=self._open_handed(stack))
        side = ContainerSide(self.supervisor, request, self.stderr, relay=self.relay)
        self.side = side
        return side, side.start(stack)

    # -- the root side, through the helper ---------------------------------------------------

    def _open_for_sandbox(self, host: Path) -> int:
        """A file the user hands the sandbox, opened for reading as the user may (root,
        acting for a user, opens only the user's own files, without following their
        symlinks)."""
        try:
            return open_for_reading(host, self.user)
        except OSError as exc:
            # A symlink is never followed: the sandbox may have planted it where the user
            # looks (its downloads directory), aimed at a file of theirs.
            if exc.errno == errno.ELOOP:
                raise SandboxError(f"cannot hand {host} to the sandbox: it is a symlink",
                                   hint="name the file it points to",
                                   status=ExitStatus.USAGE) from None
            raise SandboxError(f"cannot hand {host} to the sandbox: {exc.strerror}",
                               status=ExitStatus.USAGE) from None
        except nofollow.Refused as exc:
            raise SandboxError(f"cannot hand {host} to the sandbox: {exc.why}",
                               status=ExitStatus.USAGE) from None

    def _open_handed(self, stack: ExitStack) -> tuple[tuple[int, str], ...]:
        """The files the command line hands the sandbox, with their names inside."""
        opened = []
        for handed in self.plan.handed:
            fd = self._open_for_sandbox(handed.host)
            stack.callback(os.close, fd)
            opened.append((fd, handed.inside.name))
        return tuple(opened)

    def hand_file(self, host: Path) -> PurePosixPath:
        """Hand the running sandbox a file the user chose (opened for reading as the user
        may); its path inside. Any thread may ask, one at a time."""
        fd = self._open_for_sandbox(host)
        try:
            with self._handing:
                if self.side is not None:
                    return self.side.hand(fd, host.name)
                assert self.helper is not None
                self.helper.control.send(Word.FILE, host.name, (fd,))
                answer = self.helper.control.receive()
        except OSError:
            answer = None
        finally:
            os.close(fd)
        if answer is not None and answer.word is Word.HANDED:
            return PurePosixPath(answer.text)
        why = answer.text if answer is not None and answer.word is Word.REFUSED else (
            "the sandbox has stopped")
        raise SandboxError(f"cannot hand {host} to the sandbox: {why}",
                           status=ExitStatus.LAUNCHER)

    def _start_through_helper(self, stack: ExitStack,
                              features: tuple[Feature, ...]) -> subprocess.Popen[str]:
        """Hand the helper its request: it starts the container, its app at the gate, and
        opens the gate when this launcher says "open" on the control channel."""
        self.supervisor.check_interrupted()
        assert self.helper is not None
        handed = self._open_handed(stack)
        request = helper_request(self.plan, Action.LAUNCH, self.locations.data_home, features)
        process = self.helper.send(request.to_json(), tuple(fd for fd, _ in handed))
        assert process.stderr is not None and process.stdout is not None
        self.relay.raw(process.stdout, sys.stdout.fileno())
        self.relay.lines(process.stderr, self.stderr)
        stack.callback(self._end_helper, process)
        return process

    def _end_helper(self, process: subprocess.Popen[str]) -> None:
        """Should this launch give up before the app runs (a grant failed), the control
        channel ends: the helper takes back the container side, and is waited for."""
        assert self.helper is not None
        self.helper.control.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)

    def _supervise_helper(self, process: subprocess.Popen[str],
                          ask_to_quit: Callable[[], bool]) -> int:
        helper = self.helper
        assert helper is not None

        def ask_to_stop() -> None:
            # The helper stops the app gracefully when the channel says so or ends, giving it
            # the grace this launcher was asked for.
            helper.say(Word.STOP, str(self.supervisor.grace))

        try:
            return self.supervisor.wait(process, on_stop=ask_to_stop,
                                        on_timeout=helper.control.close,
                                        ask_to_quit=ask_to_quit)
        finally:
            helper.control.close()
            self.relay.join()

    def _hand_to_running(self, as_root: bool) -> dict[PurePosixPath, PurePosixPath]:
        """The command line's files, handed to the running sandbox: where each went."""
        with ExitStack() as stack:
            opened = self._open_handed(stack)
            if as_root:
                from sandboxapp.launch.join import hand_to_running

                went = hand_to_running(self.supervisor.run_dir, self.plan, self.user, opened)
            else:
                went = self._hand_through_helper(opened)
        return dict(zip((handed.inside for handed in self.plan.handed), went, strict=True))

    def _hand_through_helper(self, opened: tuple[tuple[int, str], ...]) -> list[PurePosixPath]:
        """The helper started ahead hands them (a request of its own: "hand"), and answers
        where each went."""
        helper = self.helper
        assert helper is not None
        process = helper.send(helper_request(self.plan, Action.HAND,
                                             self.locations.data_home).to_json(),
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

    def _join(self, as_root: bool) -> int:
        if self.plan.handed:
            # The files go to the running sandbox first, which numbers them its way.
            went = self._hand_to_running(as_root)
            self.plan = with_handed_at(self.plan, went)
        if as_root:
            from sandboxapp.launch.join import join

            return join(self.supervisor.run_dir, self.plan, self.user)
        # A fresh helper: the joined command gets the launcher's own input, through a pipe.
        argv = helper_argv(helper_request(self.plan, Action.JOIN, self.locations.data_home)
                           .to_json())
        return run_without_terminal(argv, base_env({"TERM": self.environ.get("TERM", "dumb")}))

    # -- the whole launch --------------------------------------------------------------------

    def run(self) -> int:
        plan = self.plan
        as_root = os.geteuid() == 0
        # A desktop user's launch comes with its helper, started (and the user's right to
        # launch checked) before anything else; the caller abandons it if it is not used.
        assert as_root or self.helper is not None
        with ExitStack() as stack:
            if not self.supervisor.begin(stack, plan.profile.name):
                # Already running: this command runs inside that sandbox instead.
                self.joined = True
                return self._join(as_root)
            # What the container binds exists first (cheap); nspawn then starts, with the app
            # held at its gate, while the grants are made; then the gate opens.
            session = self._session()
            features = prepare_features(session, stack)
            self.features = features
            self.supervisor.check_interrupted()
            if as_root:
                side, started = self._start_here(stack, features)
            else:
                process = self._start_through_helper(stack, features)
            for feature in features:
                feature.grant(session, stack)
            self.supervisor.check_interrupted()

            def ask_to_quit() -> bool:
                # The app as a whole (its session of several windows is kept), else each of
                # its windows, the way a window's close button asks.
                return (any([feature.ask_to_quit() for feature in features])
                        or any([feature.ask_to_close() for feature in features]))

            if as_root:
                from sandboxapp.launch.container import open_gate

                open_gate(started)
            else:
                self._open_helper_gate()
            # A logout now stops the sandbox while the display is there: the desktop's session
            # manager waits for this launch's connection, which closes once the app is gone.
            from sandboxapp.host.desktopsession import registered

            stack.enter_context(registered(self.environ, ["sandboxapp", "run", plan.profile.name]))
            if as_root:
                status = side.supervise(started, ask_to_quit)
            else:
                status = self._supervise_helper(process, ask_to_quit)
        if self.supervisor.signalled is not None:
            return 128 + self.supervisor.signalled
        return status

    def _open_helper_gate(self) -> None:
        # A helper that is gone already (sudo refused, nspawn failed) said why on its error
        # output; its exit status is the launch's.
        assert self.helper is not None
        self.helper.say(Word.OPEN)


def helper_image_work(action: str, profile: Profile) -> None:
    """A desktop user's first launch builds (or an auto-update updates) the image through the
    privileged helper; it does so for trusted profiles only."""
    request = HelperRequest(Action(action), profile.name, profile.path.absolute(),
                            Path("/nonexistent"))
    status = run_attached(helper_argv(request.to_json()), env=base_env())
    if status != 0:
        done = {"build": "built", "update": "updated"}[action]
        raise SandboxError(f"the image for {profile.name} could not be {done} here",
                           hint=f"ask an administrator to run: sudo sandboxapp image {action} "
                                f"{profile.name}", status=ExitStatus.LAUNCHER)

