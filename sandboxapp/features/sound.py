"""Sound: a socket of the sandbox's own, served by the launcher through a filtering proxy
(host/soundproxy.py): playback, and recording only with microphone = true."""

from __future__ import annotations

import stat
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features.base import CheckedPath, Feature, Session, Source
from sandboxapp.features.request import absolute_path, refused
from sandboxapp.fs.safepath import ensure_user_dir, write_user_file
from sandboxapp.host.sound import SOUND_DIR_MODE, SoundPaths, SoundServerAddress, server_reachable
from sandboxapp.system.nspawn import Bind
from sandboxapp.undo.entries import SoundEntry

if TYPE_CHECKING:
    from sandboxapp.plan import LaunchPlan

# Where the per-sandbox sound socket and its client configuration appear in the container.
PULSE_DIR = PurePosixPath("/run/sandboxapp/pulse")
PULSE_SOCKET = PULSE_DIR / "native"
PULSE_CLIENT_CONF = PULSE_DIR / "client.conf"
# Shared memory needs the host's IPC namespace, which the container does not have; a client
# inside must never start a sound server of its own either.
PULSE_CLIENT_CONF_TEXT = "autospawn = no\nenable-shm = no\n"


@dataclass(frozen=True)
class SoundAccess(Feature):
    paths: SoundPaths
    microphone: bool
    # The session side's: the user's server, which the proxy forwards to.
    address: SoundServerAddress | None = None

    @classmethod
    def prepare(cls, session: Session, stack: ExitStack) -> SoundAccess | None:
        """The sandbox's sound directory and its client configuration; its socket is served
        while the container starts (grant). None when the user has no server to reach."""
        sandbox = session.plan.profile.sandbox
        if not sandbox.pulseaudio:
            return None
        address = SoundServerAddress.from_environment(session.environ)
        if address is None or not server_reachable(address):
            session.warn("no PulseAudio or PipeWire server found: running without sound")
            return None
        paths = SoundPaths(session.host_dir())
        # Its undo removes the directory and the socket, after the proxy closes.
        session.supervisor.add(stack, SoundEntry(str(paths.socket), str(paths.dir),
                                                 session.user.uid))
        # The container's processes, nobody here, must reach the socket inside: they may
        # pass through the directory, not list it.
        ensure_user_dir(paths.dir, session.user, SOUND_DIR_MODE, exact_mode=True)
        write_user_file(paths.dir, paths.conf.name, PULSE_CLIENT_CONF_TEXT.encode(),
                        session.user, 0o644)
        return cls(paths, sandbox.microphone, address)

    def checked_paths(self, trusted_profile: bool) -> list[CheckedPath]:
        return [CheckedPath(self.paths.dir, False, "sound directory", stat.S_IFDIR)]

    def binds(self, source: Source) -> list[Bind]:
        # The directory: its socket appears there when the launcher serves it, which may be
        # after the container has started.
        return [Bind(source(self.paths.dir), str(PULSE_DIR))]

    def env(self) -> list[tuple[str, str]]:
        return [("PULSE_SERVER", f"unix:{PULSE_SOCKET}"),
                ("PULSE_CLIENTCONFIG", str(PULSE_CLIENT_CONF))]

    KEY = "sound"

    def part(self) -> dict[str, Any]:
        return {"dir": str(self.paths.dir)}

    @classmethod
    def from_part(cls, plan: LaunchPlan, part: Any) -> SoundAccess | None:
        """None where the session side found no server to reach."""
        if part is None:
            return None
        if not plan.profile.sandbox.pulseaudio:
            raise SandboxError("sound was asked for, but the profile has none",
                               status=ExitStatus.LAUNCHER)
        if not isinstance(part, dict) or set(part) != {"dir"}:
            raise refused("the sound's part is not {dir}")
        return cls(SoundPaths(absolute_path(part["dir"], "the sound directory")),
                   plan.profile.sandbox.microphone)

    def describe(self) -> list[str]:
        return [f"sound:    a socket of its own at {PULSE_SOCKET} inside, served by the "
                "launcher while it runs: playback only"
                + (" and recording from a microphone (microphone = true)"
                   if self.microphone else "")
                + "; modules, other programs' streams, devices and properties that make the "
                "server act are refused"]

    def grant(self, session: Session, stack: ExitStack) -> None:
        """The sandbox's socket, served here while the app runs: only what a player needs
        reaches the user's server."""
        # Loaded once nspawn is starting, like the X clients.
        from sandboxapp.host import pulsewire, soundproxy

        assert self.address is not None
        try:
            stack.enter_context(soundproxy.serving(
                self.paths.socket, self.address.socket, pulsewire.read_cookie(session.environ),
                recording=self.microphone,
                identity=f"sandboxapp.{session.plan.profile.name}", user=session.user))
        except OSError as exc:
            raise SandboxError(f"cannot make the sandbox's sound socket {self.paths.socket}: "
                               f"{exc.strerror}", status=ExitStatus.LAUNCHER) from None
