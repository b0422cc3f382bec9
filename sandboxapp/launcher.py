"""One launch: lock, recover, layer, persistent directories, X grant, sound socket, nspawn,
and everything taken back on the way out, whatever the way out is.

Each resource is written to the ledger and its undo registered on the ExitStack *before* it is
made; the undo copes with a thing that was never made. Signals only set a flag (and forward a
graceful stop to a running container); the stack unwinds in the ordinary way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sandboxapp import x11
from sandboxapp.audio import SoundServerAddress, load_socket_module, server_reachable
from sandboxapp.command import base_env
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.hostfacts import host_facts
from sandboxapp.imagefs import check_command
from sandboxapp.launchplan import PULSE_CLIENT_CONF_TEXT, LaunchPlan, launch_spec
from sandboxapp.layer import create_layer
from sandboxapp.ledger import Record, RunDir, process_identity
from sandboxapp.nspawn import NOISE_PREFIX, launch_argv
from sandboxapp.paths import Locations
from sandboxapp.recovery import SOUND_CONF, SOUND_SOCKET, reconcile, undo_entry
from sandboxapp.userdirs import DesktopUser, ensure_user_dir, write_file_no_follow

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
# How long a stopping app gets to save its state before it is killed.
STOP_TIMEOUT = 10.0
# The stub init nspawn runs as PID 1 turns this into SIGTERM for the app: a graceful stop.
GRACEFUL_KILL_SIGNAL = "SIGRTMIN+3"
NSPAWN_NOISE = (NOISE_PREFIX, "Trying to halt container. Send SIGTERM again")


@dataclass(frozen=True)
class SoundGrant:
    socket: Path  # on the host: what is bound into the container
    conf: Path
    shared: bool  # the user's own socket (no per-sandbox module could be loaded)


class Launch:
    def __init__(
        self,
        plan: LaunchPlan,
        locations: Locations,
        environ: Mapping[str, str],
        *,
        warn: Callable[[str], None],
        stderr: IO[str],
    ) -> None:
        self.plan = plan
        self.locations = locations
        self.environ = environ
        self.warn = warn
        self.stderr = stderr
        self.run_dir = RunDir(locations.run_dir)
        self.user = DesktopUser.from_environment(environ)
        self.signalled: int | None = None
        self.wake_read, self.wake_write = socket.socketpair()
        self.record: Record | None = None

    # -- signals -----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signalled is None:
            self.signalled = signum

    def _install_signal_handlers(self, stack: ExitStack) -> None:
        self.wake_write.setblocking(False)
        previous_fd = signal.set_wakeup_fd(self.wake_write.fileno(), warn_on_full_buffer=False)
        stack.callback(signal.set_wakeup_fd, previous_fd)
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, self._on_signal)
            stack.callback(signal.signal, signum, previous)
        stack.callback(self.wake_read.close)
        stack.callback(self.wake_write.close)

    def _check_interrupted(self) -> None:
        if self.signalled is not None:
            name = signal.Signals(self.signalled).name
            raise SandboxError(f"stopped by {name} before the app started",
                               status=128 + self.signalled)

    # -- resources ---------------------------------------------------------------------------

    def _undo_later(self, stack: ExitStack, entry: dict[str, Any]) -> None:
        record = self.record
        assert record is not None

        def undo() -> None:
            if any(e["id"] == entry["id"] for e in record.entries):
                try:
                    undo_entry(entry, recovering=False)
                except SandboxError as exc:
                    self.warn(f"could not undo {entry['kind']}: {exc.message}; "
                              "'sandboxapp cleanup' tries again")
                    return
                record.drop(entry)

        stack.callback(undo)

    def _layer(self, stack: ExitStack) -> Path:
        assert self.record is not None and self.plan.image is not None
        keep = not self.plan.profile.sandbox.stateless
        layer = self.plan.layer_root
        entry = self.record.add("layer", path=str(layer))
        self._undo_later(stack, entry)
        return create_layer(layer, self.plan.image.rootfs, keep=keep)

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

    def _x11(self, stack: ExitStack) -> None:
        display = self.plan.display
        if display is None:
            return
        assert self.record is not None and self.plan.image is not None
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
        uid = self.plan.image.meta.uid_base
        entry = self.record.add("x11", **access.to_record(), uid=uid)
        if x11.has_grant(access, uid):
            # The user made this grant: it is theirs, and stays after we exit.
            self.record.drop(entry)
            return
        self._undo_later(stack, entry)
        x11.grant(access, uid)

    def _sound_dir(self) -> Path:
        runtime = self.environ.get("XDG_RUNTIME_DIR", "")
        if runtime.startswith("/") and Path(runtime).is_dir():
            base = Path(runtime) / "sandboxapp"
        else:
            base = self.locations.run_dir / "sound"
        return base / self.plan.profile.name

    def _sound(self, stack: ExitStack) -> SoundGrant | None:
        if not self.plan.profile.sandbox.pulseaudio:
            return None
        assert self.record is not None
        address = SoundServerAddress.from_environment(self.environ)
        if address is None or not server_reachable(address):
            self.warn("no PulseAudio or PipeWire server found: running without sound")
            return None
        directory = self._sound_dir()
        own_socket = directory / SOUND_SOCKET
        entry = self.record.add("sound", server=str(address.socket), index=None,
                                socket=str(own_socket), dir=str(directory))
        self._undo_later(stack, entry)
        ensure_user_dir(directory, self.user)
        conf = directory / SOUND_CONF
        write_file_no_follow(conf, PULSE_CLIENT_CONF_TEXT)
        try:
            index = load_socket_module(address, own_socket)
        except SandboxError as exc:
            self.warn(
                f"{exc.message}; falling back to your own sound socket {address.socket}: the "
                "sandbox can then use it as you do, and it cannot be taken back at exit"
            )
            return SoundGrant(address.socket, conf, shared=True)
        self.record.update(entry, index=index)
        return SoundGrant(own_socket, conf, shared=False)

    # -- the container -----------------------------------------------------------------------

    def _forward_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            if not line.startswith(NSPAWN_NOISE):
                self.stderr.write(line)
                self.stderr.flush()

    def _container(self, stack: ExitStack, merged: Path, sound: SoundGrant | None) -> int:
        assert self.record is not None
        spec = launch_spec(
            self.plan,
            merged,
            sound_socket=sound.socket if sound else None,
            sound_conf=sound.conf if sound else None,
        )
        spec = dataclasses.replace(spec, kill_signal=GRACEFUL_KILL_SIGNAL)
        argv = launch_argv(spec, host_facts())
        env = base_env({"TERM": self.environ.get("TERM", "dumb")})
        entry = self.record.add("container", machine=self.plan.machine, pid=None, started=None)
        self._undo_later(stack, entry)
        self._check_interrupted()
        process = subprocess.Popen(
            # If the launcher is killed, nspawn is killed with it, and its container with it.
            ["setpriv", "--pdeathsig", "KILL", "--", *argv],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        pid, started = process_identity(process.pid)
        self.record.update(entry, pid=pid, started=started)
        assert process.stderr is not None
        forwarder = threading.Thread(target=self._forward_stderr, args=(process.stderr,),
                                     daemon=True)
        forwarder.start()
        status = self._wait(process)
        forwarder.join(timeout=5)
        return status

    def _wait(self, process: subprocess.Popen[str]) -> int:
        pidfd = os.pidfd_open(process.pid)
        deadline: float | None = None
        try:
            while True:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                waitables: list[int] = [pidfd, self.wake_read.fileno()]
                ready, _, _ = select.select(waitables, [], [], timeout)
                if pidfd in ready:
                    break
                if self.wake_read.fileno() in ready:
                    with contextlib.suppress(BlockingIOError):
                        self.wake_read.recv(64)
                if self.signalled is not None and deadline is None:
                    # A graceful stop: the app gets SIGTERM and STOP_TIMEOUT to save its work.
                    process.send_signal(signal.SIGTERM)
                    deadline = time.monotonic() + STOP_TIMEOUT
                elif deadline is not None and time.monotonic() >= deadline:
                    process.kill()
                    deadline = time.monotonic() + STOP_TIMEOUT
        finally:
            os.close(pidfd)
        return process.wait()

    # -- the whole launch --------------------------------------------------------------------

    def run(self) -> int:
        plan = self.plan
        if plan.image is None:
            raise SandboxError(
                f"the image for {plan.profile.name!r} is not built",
                hint=f"build it with: sandboxapp image build {plan.profile.name}",
                status=ExitStatus.LAUNCHER,
            )
        check_command(plan.image.rootfs, plan.command[0])
        with ExitStack() as stack:
            self._install_signal_handlers(stack)
            if not stack.enter_context(self.run_dir.profile_lock(plan.profile.name)):
                raise self.run_dir.already_running(plan.profile.name)
            for message in reconcile(self.run_dir, holding=plan.profile.name):
                self.warn(message)
            self.record = self.run_dir.new_record(plan.profile.name)
            stack.callback(self._forget_record)
            merged = self._layer(stack)
            self._check_interrupted()
            self._persistent_dirs()
            self._x11(stack)
            self._check_interrupted()
            sound = self._sound(stack)
            self._check_interrupted()
            status = self._container(stack, merged, sound)
        if self.signalled is not None:
            return 128 + self.signalled
        return status

    def _forget_record(self) -> None:
        assert self.record is not None
        if not self.record.entries:
            self.record.delete()
