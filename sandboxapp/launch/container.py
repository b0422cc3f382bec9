"""The root side of a launch: the writable layer, the checked binds, systemd-nspawn.

Used in-process when sandboxapp runs as root, and by the privileged helper when a desktop user
launches. Every host path the user controls (persistent directories, read-only binds, the sound
socket) is opened without following symlinks, its owner checked on the descriptor, and that
very inode bind-mounted into a staging directory in the layer; nspawn only sees staged paths.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from sandboxapp.command import Relay, base_env, spawn
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features import Feature
from sandboxapp.features.spec import launch_spec
from sandboxapp.fs import nofollow
from sandboxapp.fs.mounts import make_private, stage_owned
from sandboxapp.fs.safepath import DesktopUser
from sandboxapp.launch.supervisor import Supervisor
from sandboxapp.output import TextSink
from sandboxapp.plan import LaunchPlan
from sandboxapp.system.containertree import PID_NAMESPACE, stop_app
from sandboxapp.system.control import ControlChannel, Message, Word
from sandboxapp.system.handed import HandedFiles
from sandboxapp.system.hostfacts import host_facts
from sandboxapp.system.layer import create_layer
from sandboxapp.system.nspawn import NOISE_PREFIX, LaunchSpec, launch_argv
from sandboxapp.undo.entries import ContainerEntry, LayerEntry
from sandboxapp.undo.ledger import process_identity

NSPAWN_NOISE = (NOISE_PREFIX, "Trying to halt container. Send SIGTERM again")


@dataclass(frozen=True)
class ContainerRequest:
    plan: LaunchPlan
    user: DesktopUser
    trusted_profile: bool  # from a root-owned profile directory
    features: tuple[Feature, ...]
    # Files the sandbox is handed at its start (system/handed.py): the user's, open for
    # reading, each with the name it has inside.
    handed: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Started:
    """A container whose app waits at its gate."""

    process: subprocess.Popen[bytes]
    gate_fd: int
    # The features' checks as the sandbox (Feature.check_as_sandbox), made before it opens.
    checks: tuple[Callable[[], None], ...] = ()


def make_gate(path: Path) -> int:
    """The FIFO the app waits at inside (plan.GATE), and the launcher's end of it, to be
    held open while the container runs: a line written to it lets the app start; its end
    (the launcher gone, or giving up) ends the app's wait with exit status 125."""
    os.mkfifo(path, 0o600)
    # The app reads it as the container's root, a UID that is nobody here.
    os.chmod(path, 0o604)
    return os.open(path, os.O_RDWR | os.O_CLOEXEC)


def open_gate(started: Started) -> None:
    for check in started.checks:
        check()  # raises: the gate stays shut, and the container is stopped
    os.write(started.gate_fd, b"go\n")


def _wait_to_appear(path: Path, seconds: float) -> None:
    """Until path exists (as anything: it is checked next, never followed), or seconds."""
    deadline = time.monotonic() + seconds
    while not os.path.lexists(path) and time.monotonic() < deadline:
        time.sleep(0.005)


class ContainerSide:
    def __init__(self, supervisor: Supervisor, request: ContainerRequest, stderr: TextSink,
                 control: ControlChannel | None = None, relay: Relay | None = None) -> None:
        self.supervisor = supervisor
        self.request = request
        self.stderr = stderr
        self.control = control  # the launcher's, whose "open" opens the gate
        self.relay = relay or Relay()
        self.handed: HandedFiles | None = None
        self._handing = threading.Lock()

    def _layer(self, stack: ExitStack) -> Path:
        plan = self.request.plan
        assert plan.image is not None
        self.supervisor.add(stack, LayerEntry(str(plan.layer_root)))
        state = plan.state_root / str(self.request.user.uid) if plan.state_root else None
        merged = create_layer(plan.layer_root, plan.image.rootfs, state=state)
        # Only the files directory sends the container what the host mounts later.
        make_private(str(merged))
        return merged

    def _stage(self, layer_dir: Path) -> dict[Path, Path]:
        staging = layer_dir / "binds"
        staging.mkdir(mode=0o700, exist_ok=True)
        staged: dict[Path, Path] = {}
        user = self.request.user
        checked = [path for feature in self.request.features
                   for path in feature.checked_paths(self.request.trusted_profile)]
        # What may take a moment to appear is staged last, when it has had the most time.
        checked.sort(key=lambda path: path.appears_within)
        for index, path in enumerate(checked):
            target = staging / str(index)
            if path.appears_within:
                _wait_to_appear(path.path, path.appears_within)
            try:
                stage_owned(str(path.path), user.uid, user.gid, str(target),
                            trusted=path.trusted, file_type=path.file_type)
            except nofollow.Refused as exc:
                raise SandboxError(f"{path.what}: {exc}", status=ExitStatus.LAUNCHER) from None
            except OSError as exc:
                raise SandboxError(f"cannot stage {path.path} for the sandbox: {exc.strerror}",
                                   status=ExitStatus.LAUNCHER) from None
            make_private(str(target))
            staged[path.path] = target
        return staged

    def _gate(self, stack: ExitStack) -> tuple[Path, int]:
        gate = self.request.plan.layer_root / "gate"
        fd = make_gate(gate)
        stack.callback(os.close, fd)
        return gate, fd

    def _spawn_argv(self, spec: LaunchSpec) -> list[str]:
        # If the launcher is killed, unshare is killed with it, and nspawn and its container
        # with that.
        return ["setpriv", "--pdeathsig", "KILL", "--", *PID_NAMESPACE,
                *launch_argv(spec, host_facts())]

    def _spawn_env(self) -> dict[str, str]:
        return base_env({"TERM": os.environ.get("TERM", "dumb")})

    def _relay(self, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.relay.raw(stdout, sys.stdout.fileno())
        self.relay.lines(io.TextIOWrapper(stderr, errors="replace"), self.stderr, NSPAWN_NOISE)

    def run(self, stack: ExitStack) -> int:
        """The helper's launch: start the container, open its gate (with a control channel:
        when it says the user's launcher has made the grants, "open"), supervise it. A
        channel that ends or asks to stop first: the app never starts (status LAUNCHER, said
        by the user's launcher, which gave up)."""
        started = self.start(stack)
        if self.control is not None and not self.supervisor.wait_for_open(
                started.process, self.control, self._take_file):
            if started.process.poll() is None:
                return ExitStatus.LAUNCHER
            return self.supervise(started)  # nspawn failed: its status, and what it said
        open_gate(started)
        return self.supervise(started)

    def hand(self, fd: int, name: str) -> PurePosixPath:
        """Hand the running sandbox the file open as fd (the user's, for reading); its path
        inside."""
        assert self.handed is not None
        with self._handing:
            return self.handed.hand(fd, name)

    def _take_file(self, message: Message) -> None:
        """The launcher's "file": hand it, and answer with its path inside, or why not."""
        assert self.control is not None
        try:
            answer = (Word.HANDED, str(self.hand(message.fds[0], message.text)))
        except SandboxError as error:
            answer = (Word.REFUSED, error.message)
        finally:
            os.close(message.fds[0])
        with contextlib.suppress(OSError):
            self.control.send(*answer)

    def start(self, stack: ExitStack) -> Started:
        """Start the container, with the app held at its gate."""
        plan = self.request.plan
        merged = self._layer(stack)
        self.supervisor.check_interrupted()
        staged = self._stage(plan.layer_root)
        gate, gate_fd = self._gate(stack)
        assert plan.image is not None
        self.handed = HandedFiles(plan.layer_root, plan.image.meta.uid_range.base)
        stack.callback(self.handed.close)
        files = self.handed.prepare()
        for fd, name in self.request.handed:
            self.handed.hand(fd, name)
        spec = launch_spec(plan, merged, self.request.features, gate=gate, files=files,
                           staged=staged)
        checks = tuple(check for feature in self.request.features
                       if (check := feature.check_as_sandbox(spec.ids.base)) is not None)
        entry = self.supervisor.add(stack, ContainerEntry(
            plan.machine, spec.ids.base, self.request.user.uid, str(plan.profile.path)))
        self.supervisor.check_interrupted()
        # The container gets no terminal: no input, its output through pipes that the
        # launcher copies, and a session of its own, so that Ctrl-C or a signal to the
        # launcher's process group reaches only the launcher, which stops the app gracefully
        # (nspawn itself would SIGKILL it). A process inside cannot push input into the user's
        # shell (TIOCSTI) through a terminal it does not have.
        process = spawn(self._spawn_argv(spec), env=self._spawn_env(),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, new_session=True)
        pid, started = process_identity(process.pid)
        assert self.supervisor.record is not None
        self.supervisor.record.update(entry, pid=pid, started=started)
        assert process.stdout is not None and process.stderr is not None
        self._relay(process.stdout, process.stderr)
        return Started(process, gate_fd, checks)

    def supervise(self, started: Started, ask_to_quit: Callable[[], bool] | None = None) -> int:
        """ask_to_quit: the session side's, where it runs in this process (root's launch)."""
        process = started.process
        status = self.supervisor.wait(process, on_stop=lambda: stop_app(process.pid),
                                      on_timeout=process.kill, control=self.control,
                                      ask_to_quit=ask_to_quit, on_file=self._take_file)
        self.relay.join()
        return status
