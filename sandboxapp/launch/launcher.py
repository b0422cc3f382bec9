"""One launch, as `sandboxapp run` does it.

The launcher is the session side (the desktop user's: the grants of features/); it reaches the
root side (layer, binds, systemd-nspawn) in this process or through the privileged helper
(rootside.py).

Each resource is written to the ledger and its undo registered on the ExitStack *before* it is
made; the undo copes with a thing that was never made.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path, PurePosixPath

from sandboxapp.command import Relay, base_env, run_attached
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features import Feature, Session, prepare_features
from sandboxapp.features.request import Action, HelperRequest
from sandboxapp.fs.safepath import DesktopUser
from sandboxapp.launch.helperclient import PendingHelper, helper_argv
from sandboxapp.launch.rootside import InProcess, RootSide, ThroughHelper, open_for_sandbox
from sandboxapp.launch.supervisor import Supervisor
from sandboxapp.output import TextSink
from sandboxapp.paths import Locations
from sandboxapp.plan import LaunchPlan
from sandboxapp.profile.model import Profile
from sandboxapp.system.handed import cannot_hand
from sandboxapp.undo.ledger import RunDir


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
        # Set when the profile was running already and this command ran inside it.
        self.joined = False
        self.locations = locations
        self.environ = environ
        self.warn = warn
        self.user = DesktopUser.from_environment(environ)
        self.supervisor = Supervisor(RunDir(locations.run_dir), warn)
        # The app's output, through the helper or not: whether there was any.
        self.relay = Relay()
        self.root: RootSide
        if os.geteuid() == 0:
            self.root = InProcess(self.supervisor, self.user, stderr, self.relay)
        else:
            # A desktop user's launch comes with its helper, started (and the user's right to
            # launch checked) before anything else; the caller abandons it if it is not used.
            assert helper is not None
            self.root = ThroughHelper(helper, self.supervisor, self.user, locations.data_home,
                                      environ, stderr, self.relay)
        self._handing = threading.Lock()
        self.features: tuple[Feature, ...] = ()

    def _session(self) -> Session:
        return Session(self.plan, self.user, self.environ, self.supervisor, self.warn,
                       self.locations.run_dir, hand=self.hand_file, focused=self._focused)

    def _focused(self) -> bool | None:
        """Whether the sandbox's window has the user's focus, where a feature can tell."""
        told = [found for feature in self.features
                if (found := feature.has_focus()) is not None]
        return any(told) if told else None

    def hand_file(self, host: Path) -> PurePosixPath:
        """Hand the running sandbox a file the user chose (opened for reading as the user
        may); its path inside. Any thread may ask, one at a time."""
        fd = open_for_sandbox(host, self.user)
        try:
            with self._handing:
                return self.root.hand(fd, host)
        except OSError:
            raise cannot_hand(host, "the sandbox has stopped") from None
        finally:
            os.close(fd)

    # -- the whole launch --------------------------------------------------------------------

    def run(self) -> int:
        plan = self.plan
        with ExitStack() as stack:
            if not self.supervisor.begin(stack, plan.profile.name):
                # Already running: this command runs inside that sandbox instead.
                self.joined = True
                return self.root.join(plan)
            # What the container binds exists first (cheap); nspawn then starts, with the app
            # held at its gate, while the grants are made; then the gate opens.
            session = self._session()
            features = prepare_features(session, stack)
            self.features = features
            self.supervisor.check_interrupted()
            self.root.start(stack, plan, features)
            for feature in features:
                feature.grant(session, stack)
            self.supervisor.check_interrupted()

            def ask_to_quit() -> bool:
                # The app as a whole (its session of several windows is kept), else each of
                # its windows, the way a window's close button asks.
                return (any([feature.ask_to_quit() for feature in features])
                        or any([feature.ask_to_close() for feature in features]))

            self.root.open_gate()
            # A logout now stops the sandbox while the display is there: the desktop's session
            # manager waits for this launch's connection, which closes once the app is gone.
            from sandboxapp.host.desktopsession import registered

            stack.enter_context(registered(self.environ, ["sandboxapp", "run", plan.profile.name]))
            status = self.root.supervise(ask_to_quit)
        if self.supervisor.signalled is not None:
            return 128 + self.supervisor.signalled
        return status


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

