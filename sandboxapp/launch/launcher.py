"""One launch, as `sandboxapp run` does it.

The session side (the desktop user's: X grant, sound socket, persistent directories) and the
root side (layer, binds, systemd-nspawn; see container.py) run in one process when sandboxapp
runs as root. A desktop user's launcher does the session side itself and reaches the root side
through the privileged helper that `sandboxapp setup` installs (sudo, one narrow entry point).

Each resource is written to the ledger and its undo registered on the ExitStack *before* it is
made; the undo copes with a thing that was never made.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandboxapp.command import base_env
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.fs.safepath import DesktopUser, ensure_user_dir, write_file_no_follow
from sandboxapp.helper.client import PendingHelper, helper_argv
from sandboxapp.host import pulsewire, soundproxy, x11, x11auth
from sandboxapp.host.sound import SOUND_DIR_MODE, SoundPaths, SoundServerAddress, server_reachable
from sandboxapp.image.fs import check_command
from sandboxapp.launch.ledger import RunDir
from sandboxapp.launch.plan import PULSE_CLIENT_CONF_TEXT, X11_DIR, LaunchPlan
from sandboxapp.launch.supervisor import Relay, Supervisor, TextSink
from sandboxapp.paths import Locations
from sandboxapp.profile.model import Profile

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
        self._x11_entry: dict[str, Any] = {}
        self.locations = locations
        self.environ = environ
        self.warn = warn
        self.stderr = stderr
        self.user = DesktopUser.from_environment(environ)
        self.supervisor = Supervisor(RunDir(locations.run_dir), warn)
        # The app's output, through the helper or not: whether there was any.
        self.relay = Relay()

    # -- the session side --------------------------------------------------------------------

    def _persistent_dirs(self) -> None:
        for persist in self.plan.persist:
            ensure_user_dir(persist.host, self.user)
        for bind in self.plan.profile.sandbox.bind_ro:
            if not os.path.exists(bind.host):
                raise SandboxError(
                    f"{self.plan.profile.path}: sandbox.bind_ro: {bind.host} does not exist",
                    hint="create it, or remove it from the profile",
                    status=ExitStatus.LAUNCHER,
                )

    def _check_display(self) -> x11.XAccess | None:
        display = self.plan.display
        if display is None:
            return None
        try:
            is_socket = stat.S_ISSOCK(display.socket.stat().st_mode)
        except OSError:
            is_socket = False
        if not is_socket:
            raise SandboxError(
                f"the X display {display.name} has no socket at {display.socket}",
                hint="is the X server running? check DISPLAY",
                status=ExitStatus.LAUNCHER,
            )
        return x11.XAccess.from_environment(display, self.environ)

    def _x11_dir(self, stack: ExitStack, access: x11.XAccess | None) -> Path | None:
        """The sandbox's X directory, for its untrusted authorization (made later, while the
        container starts: _x11_grant), recorded with its undo before it is made."""
        if access is None or self.plan.profile.sandbox.x11_trusted:
            return None
        directory = self._host_dir(X11_DIR)
        self._x11_entry = self.supervisor.add(
            stack, "x11-auth", **access.to_record(), authid=None, server=None,
            dir=str(directory), user=self.user.uid)
        ensure_user_dir(directory, self.user, 0o700, exact_mode=True)
        return directory

    def _x11_grant(self, stack: ExitStack, access: x11.XAccess | None,
                   directory: Path | None) -> None:
        """The display grant: an untrusted authorization in the X directory's Xauthority
        file, or (x11 = "trusted") the host-list entry."""
        if access is None:
            return
        assert self.plan.image is not None and self.supervisor.record is not None
        record = self.supervisor.record
        if directory is None:
            self.warn(f'{self.plan.profile.name} has x11 = "trusted": it can read and type '
                      "into every window on your display while it runs")
            uid = self.plan.image.meta.uid_base
            entry = self.supervisor.add(stack, "x11", **access.to_record(), uid=uid)
            if not x11.grant(access, uid):
                # The user had made this grant: it is theirs, and stays after we exit.
                record.drop(entry)
            return
        # The connection that makes the authorization stays open to revoke it at exit.
        display = stack.enter_context(x11auth.connection(access))
        authorization = x11auth.generate(display, access)
        entry = self._x11_entry
        record.update(entry, authid=authorization.authid, server=authorization.server)

        def revoke() -> None:
            # Revoked here, the entry's own undo only removes the directory; failing here,
            # that undo tries again over a new connection.
            with contextlib.suppress(SandboxError):
                x11auth.revoke_on(display, authorization.authid)
                if any(e["id"] == entry["id"] for e in record.entries):
                    record.update(entry, authid=None)

        stack.callback(revoke)
        path = x11auth.write_file(directory, access.display.number, authorization.cookie)
        if os.geteuid() == 0:
            # Bound with rootidmap: the user's file is the container root's own there.
            os.chown(path, self.user.uid, self.user.gid)

    def _host_dir(self, kind: str = "") -> Path:
        """The sandbox's directory on the host for its sound socket (kind ""), or for its X
        authorization (X11_DIR): in the user's runtime directory, or the run directory."""
        runtime = self.environ.get("XDG_RUNTIME_DIR", "")
        if runtime.startswith("/") and Path(runtime).is_dir():
            base = Path(runtime) / "sandboxapp"
        else:
            base = self.locations.run_dir / "sound"
        return base / kind / self.plan.profile.name if kind else base / self.plan.profile.name

    def _sound_dir(self, stack: ExitStack) -> tuple[SoundPaths, SoundServerAddress] | None:
        """The sandbox's sound directory and its client configuration; its socket is served
        later (_sound_serve), while the container starts."""
        if not self.plan.profile.sandbox.pulseaudio:
            return None
        address = SoundServerAddress.from_environment(self.environ)
        if address is None or not server_reachable(address):
            self.warn("no PulseAudio or PipeWire server found: running without sound")
            return None
        sound = SoundPaths(self._host_dir())
        # Its undo removes the directory and the socket, after the proxy closes.
        self.supervisor.add(stack, "sound", server=str(address.socket), index=None,
                            socket=str(sound.socket), dir=str(sound.dir))
        # The container's processes, nobody here, must reach the socket inside: they may
        # pass through the directory, not list it.
        ensure_user_dir(sound.dir, self.user, SOUND_DIR_MODE, exact_mode=True)
        write_file_no_follow(sound.conf, PULSE_CLIENT_CONF_TEXT)
        if os.geteuid() == 0:
            os.chown(sound.conf, self.user.uid, self.user.gid)
        return sound, address

    def _sound_serve(self, stack: ExitStack,
                     sound: tuple[SoundPaths, SoundServerAddress] | None) -> None:
        """The sandbox's socket, served here while the app runs: only what a player needs
        reaches the user's server (soundproxy.py)."""
        if sound is None:
            return
        paths, address = sound
        try:
            stack.enter_context(soundproxy.serving(
                paths.socket, address.socket, pulsewire.read_cookie(self.environ),
                recording=self.plan.profile.sandbox.microphone))
        except OSError as exc:
            raise SandboxError(f"cannot make the sandbox's sound socket {paths.socket}: "
                               f"{exc.strerror}", status=ExitStatus.LAUNCHER) from None

    # -- the root side, here -----------------------------------------------------------------

    def _start_here(self, stack: ExitStack, sound: SoundPaths | None,
                    x11_dir: Path | None) -> tuple[ContainerSide, Started]:
        # A desktop user's launcher leaves this to the helper, and need not load it.
        from sandboxapp.launch.container import ContainerRequest, ContainerSide

        request = ContainerRequest(self.plan, self.user, trusted_profile=True, sound=sound,
                                   x11_dir=x11_dir)
        side = ContainerSide(self.supervisor, request, self.stderr, relay=self.relay)
        return side, side.start(stack)

    # -- the root side, through the helper ---------------------------------------------------

    def _helper_words(self, action: str, sound: SoundPaths | None,
                      x11_dir: Path | None = None) -> list[str]:
        plan = self.plan
        argv = [action,
                "--profile-file", str(plan.profile.path.absolute()),
                "--data-home", str(self.locations.data_home)]
        if plan.display is not None:
            argv += ["--display", str(plan.display.number)]
        if x11_dir is not None:
            argv += ["--x11-dir", str(x11_dir)]
        if sound is not None:
            argv += ["--sound-dir", str(sound.dir)]
        if plan.program:
            argv += ["--command", plan.program]
        return [*argv, plan.profile.name, "--", *plan.extra_args]

    def _start_through_helper(self, stack: ExitStack, sound: SoundPaths | None,
                              x11_dir: Path | None) -> subprocess.Popen[str]:
        """Hand the helper its request: it starts the container, its app at the gate, and
        opens the gate when this launcher says "open" on its input."""
        self.supervisor.check_interrupted()
        assert self.helper is not None
        process = self.helper.send(self._helper_words("launch", sound, x11_dir))
        assert process.stderr is not None and process.stdout is not None
        self.relay.raw(process.stdout, sys.stdout.fileno())
        self.relay.lines(process.stderr, self.stderr)
        stack.callback(self._end_helper, process)
        return process

    def _end_helper(self, process: subprocess.Popen[str]) -> None:
        """Should this launch give up before the app runs (a grant failed), the helper's
        input ends: it takes back the container side, and is waited for."""
        assert process.stdin is not None
        with contextlib.suppress(OSError):
            process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)

    def _supervise_helper(self, process: subprocess.Popen[str]) -> int:
        assert process.stdin is not None
        stdin = process.stdin

        def ask_to_stop() -> None:
            # The helper stops the app gracefully when its input says so or ends, giving it
            # the grace this launcher was asked for.
            with contextlib.suppress(OSError):
                stdin.write(f"stop {self.supervisor.grace}\n")
                stdin.flush()

        def end_input() -> None:
            with contextlib.suppress(OSError):
                stdin.close()

        try:
            return self.supervisor.wait(process, on_stop=ask_to_stop, on_timeout=end_input)
        finally:
            end_input()
            self.relay.join()

    def _join(self, as_root: bool) -> int:
        if as_root:
            from sandboxapp.launch.join import join

            return join(self.supervisor.run_dir, self.plan, self.user)
        # A fresh helper: the joined command gets the launcher's own input, through a pipe.
        from sandboxapp.launch.join import run_without_terminal

        argv = helper_argv(self._helper_words("join", None))
        return run_without_terminal(argv, base_env({"TERM": self.environ.get("TERM", "dumb")}))

    # -- the whole launch --------------------------------------------------------------------

    def run(self) -> int:
        plan = self.plan
        as_root = os.geteuid() == 0
        # A desktop user's launch comes with its helper, started (and the user's right to
        # launch checked) before anything else; the caller abandons it if it is not used.
        assert as_root or self.helper is not None
        if plan.image is None:
            raise SandboxError(
                f"the image for {plan.profile.name!r} is not built",
                hint=f"build it with: sandboxapp image build {plan.profile.name}",
                status=ExitStatus.LAUNCHER,
            )
        check_command(plan.image.rootfs, plan.command[0])
        with ExitStack() as stack:
            if not self.supervisor.begin(stack, plan.profile.name):
                # Already running: this command runs inside that sandbox instead.
                self.joined = True
                return self._join(as_root)
            # What the container binds exists first (cheap); nspawn then starts, with the app
            # held at its gate, while the grants are made; then the gate opens.
            self._persistent_dirs()
            access = self._check_display()
            x11_dir = self._x11_dir(stack, access)
            sound = self._sound_dir(stack)
            sound_paths = sound[0] if sound else None
            self.supervisor.check_interrupted()
            if as_root:
                side, started = self._start_here(stack, sound_paths, x11_dir)
            else:
                process = self._start_through_helper(stack, sound_paths, x11_dir)
            self._x11_grant(stack, access, x11_dir)
            self._sound_serve(stack, sound)
            self.supervisor.check_interrupted()
            if as_root:
                from sandboxapp.launch.container import open_gate

                open_gate(started)
                status = side.supervise(started)
            else:
                self._open_helper_gate(process)
                status = self._supervise_helper(process)
        if self.supervisor.signalled is not None:
            return 128 + self.supervisor.signalled
        return status

    def _open_helper_gate(self, process: subprocess.Popen[str]) -> None:
        assert process.stdin is not None
        # A helper that is gone already (sudo refused, nspawn failed) said why on its error
        # output; its exit status is the launch's.
        with contextlib.suppress(OSError):
            process.stdin.write("open\n")
            process.stdin.flush()


def helper_image_work(action: str, profile: Profile) -> None:
    """A desktop user's first launch builds (or an auto-update updates) the image through the
    privileged helper; it does so for trusted profiles only."""
    argv = helper_argv([action, "--profile-file", str(profile.path.absolute()),
                        "--data-home", "/nonexistent", profile.name])
    status = subprocess.run(argv, env=base_env(), check=False).returncode
    if status != 0:
        done = {"build": "built", "update": "updated"}[action]
        raise SandboxError(f"the image for {profile.name} could not be {done} here",
                           hint=f"ask an administrator to run: sudo sandboxapp image {action} "
                                f"{profile.name}", status=ExitStatus.LAUNCHER)

