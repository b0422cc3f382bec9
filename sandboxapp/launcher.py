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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandboxapp import prestart, pulsewire, soundproxy, x11, x11auth
from sandboxapp.audio import (
    SOUND_DIR_MODE,
    SoundPaths,
    SoundServerAddress,
    server_reachable,
)
from sandboxapp.command import base_env
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.helperclient import PendingHelper, helper_argv
from sandboxapp.imagefs import check_command
from sandboxapp.launchplan import PULSE_CLIENT_CONF_TEXT, X11_DIR, LaunchPlan
from sandboxapp.ledger import RunDir
from sandboxapp.paths import Locations
from sandboxapp.profile import Profile
from sandboxapp.safepath import DesktopUser, ensure_user_dir, write_file_no_follow
from sandboxapp.supervisor import Relay, Supervisor, TextSink

if TYPE_CHECKING:
    from sandboxapp.prestart import Prestarted


@dataclass(frozen=True)
class TicketTerms:
    """What a ticket for root's next identical launch is filed and checked under: the words
    after `run`, and the profile files they may find (prestart.py)."""

    words: tuple[str, ...]
    profile_files: tuple[str, ...]


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
        prestarted: Prestarted | None = None,
        ticket: TicketTerms | None = None,
    ) -> None:
        self.plan = plan
        self.helper = helper
        self.prestarted = prestarted
        self.ticket = ticket
        self.prestart_used = False
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

    def _x11(self, stack: ExitStack) -> Path | None:
        """The display grant; the sandbox's X directory where it is an untrusted one."""
        display = self.plan.display
        if display is None:
            return None
        assert self.plan.image is not None
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
        access = x11.XAccess.from_environment(display, self.environ)
        if not self.plan.profile.sandbox.x11_trusted:
            return self._x11_untrusted(stack, access)
        self.warn(f'{self.plan.profile.name} has x11 = "trusted": it can read and type into '
                  "every window on your display while it runs")
        uid = self.plan.image.meta.uid_base
        entry = self.supervisor.add(stack, "x11", **access.to_record(), uid=uid)
        if not x11.grant(access, uid):
            # The user had made this grant: it is theirs, and stays after we exit.
            assert self.supervisor.record is not None
            self.supervisor.record.drop(entry)
        return None

    def _x11_untrusted(self, stack: ExitStack, access: x11.XAccess) -> Path:
        """An untrusted authorization of the sandbox's own, in an Xauthority file of a
        directory of the sandbox's (the X directory, bound read-only into the container)."""
        directory = self._host_dir(X11_DIR)
        entry = self.supervisor.add(stack, "x11-auth", **access.to_record(), authid=None,
                                    server=None, dir=str(directory), user=self.user.uid)
        ensure_user_dir(directory, self.user, 0o700, exact_mode=True)
        authorization = x11auth.generate(access)
        assert self.supervisor.record is not None
        self.supervisor.record.update(entry, authid=authorization.authid,
                                      server=authorization.server)
        path = x11auth.write_file(directory, access.display.number, authorization.cookie)
        if os.geteuid() == 0:
            # Bound with rootidmap: the user's file is the container root's own there.
            os.chown(path, self.user.uid, self.user.gid)
        return directory

    def _host_dir(self, kind: str = "") -> Path:
        """The sandbox's directory on the host for its sound socket (kind ""), or for its X
        authorization (X11_DIR): in the user's runtime directory, or the run directory."""
        runtime = self.environ.get("XDG_RUNTIME_DIR", "")
        if runtime.startswith("/") and Path(runtime).is_dir():
            base = Path(runtime) / "sandboxapp"
        else:
            base = self.locations.run_dir / "sound"
        return base / kind / self.plan.profile.name if kind else base / self.plan.profile.name

    def _sound(self, stack: ExitStack) -> SoundPaths | None:
        if not self.plan.profile.sandbox.pulseaudio:
            return None
        address = SoundServerAddress.from_environment(self.environ)
        if address is None or not server_reachable(address):
            self.warn("no PulseAudio or PipeWire server found: running without sound")
            return None
        sound = SoundPaths(self._host_dir())
        entry = self.supervisor.add(stack, "sound", server=str(address.socket), index=None,
                                    socket=str(sound.socket), dir=str(sound.dir))
        # The container's processes, nobody here, must reach the socket inside: they may
        # pass through the directory, not list it.
        ensure_user_dir(sound.dir, self.user, SOUND_DIR_MODE, exact_mode=True)
        write_file_no_follow(sound.conf, PULSE_CLIENT_CONF_TEXT)
        if os.geteuid() == 0:
            os.chown(sound.conf, self.user.uid, self.user.gid)
        del entry  # its undo removes the directory and the socket, after the proxy closes
        # The sandbox's socket, served here while the app runs: only what a player needs
        # reaches the user's server (soundproxy.py).
        try:
            stack.enter_context(soundproxy.serving(
                sound.socket, address.socket, pulsewire.read_cookie(self.environ),
                recording=self.plan.profile.sandbox.microphone))
        except OSError as exc:
            raise SandboxError(f"cannot make the sandbox's sound socket {sound.socket}: "
                               f"{exc.strerror}", status=ExitStatus.LAUNCHER) from None
        return sound

    # -- the root side, here -----------------------------------------------------------------

    def _as_root(self, stack: ExitStack, sound: SoundPaths | None,
                 x11_dir: Path | None) -> int:
        # A desktop user's launcher leaves this to the helper, and need not load it.
        from sandboxapp.container import ContainerRequest, ContainerSide, open_gate

        request = ContainerRequest(self.plan, self.user, trusted_profile=True, sound=sound,
                                   x11_dir=x11_dir)
        side = ContainerSide(self.supervisor, request, self.stderr, relay=self.relay)
        ticketed = self.ticket is not None and self.plan.profile.sandbox.stateless
        body = side.ticket_body() if ticketed else None
        prestarted = self.prestarted
        if prestarted is not None and body is not None and prestart.body_of(
                prestarted.ticket) == body:
            started = side.adopt(stack, prestarted)
            self.prestart_used = True
        else:
            if prestarted is not None:
                # Worked out afresh, this launch is not the one its ticket started (the
                # sound server changed, say): that container goes, and this one starts.
                prestarted.close_fds()
                self.supervisor.adopted.close()
            started = side.start(stack)
        open_gate(started)
        if body is not None and not self.prestart_used:
            self._leave_ticket(body)
        return side.supervise(started)

    def _leave_ticket(self, body: dict[str, Any]) -> None:
        """File what this launch did, for root's next identical one to start before loading."""
        assert self.ticket is not None and self.plan.image is not None
        image = self.plan.image
        watched = (*self.ticket.profile_files, str(image.path / "image.json"), str(image.rootfs))
        updates = self.plan.profile.updates
        # Then the image is due for its update (or a word about it): a launch the ordinary way.
        expires = image.meta.refreshed_at.timestamp() + updates.update_after_days * 86400
        ticket = {"version": prestart.TICKET_VERSION,
                  "key": prestart.launch_key(self.ticket.words, self.environ, watched),
                  "watched": watched, "expires": expires, **body}
        # Without a ticket the next launch is only slower.
        with contextlib.suppress(OSError):
            prestart.write_ticket(prestart.ticket_path(str(self.locations.run_dir),
                                                       self.ticket.words), ticket)

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
        extra = plan.command[len(plan.profile.command):]
        return [*argv, plan.profile.name, "--", *extra]

    def _through_helper(self, sound: SoundPaths | None, x11_dir: Path | None) -> int:
        self.supervisor.check_interrupted()
        assert self.helper is not None
        process = self.helper.send(self._helper_words("launch", sound, x11_dir))
        assert process.stdin is not None and process.stderr is not None
        assert process.stdout is not None
        stdin = process.stdin
        self.relay.raw(process.stdout, sys.stdout.fileno())
        self.relay.lines(process.stderr, self.stderr)

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
            from sandboxapp.join import join

            return join(self.supervisor.run_dir, self.plan, self.user)
        # A fresh helper: the joined command gets the launcher's own input, through a pipe.
        from sandboxapp.join import run_without_terminal

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
            prestarted = self.prestarted
            if not self.supervisor.begin(stack, plan.profile.name, prestarted):
                # Already running: this command runs inside that sandbox instead.
                self.joined = True
                return self._join(as_root)
            if prestarted is not None:
                prestarted.adopted = True
            self._persistent_dirs()
            x11_dir = self._x11(stack)
            self.supervisor.check_interrupted()
            sound = self._sound(stack)
            self.supervisor.check_interrupted()
            status = (self._as_root(stack, sound, x11_dir) if as_root
                      else self._through_helper(sound, x11_dir))
        if self.supervisor.signalled is not None:
            return 128 + self.supervisor.signalled
        return status


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

