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
import signal
import stat
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sandboxapp import nofollow, prestart
from sandboxapp.audio import SOUND_DIR_MODE, SoundPaths
from sandboxapp.command import base_env
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.hostfacts import host_facts
from sandboxapp.launchplan import LaunchPlan, launch_spec
from sandboxapp.layer import create_layer, layer_marker
from sandboxapp.ledger import process_identity, record_text
from sandboxapp.mountcalls import stage_owned
from sandboxapp.nspawn import NOISE_PREFIX, LaunchSpec, launch_argv
from sandboxapp.prestart import make_gate
from sandboxapp.procstat import namespace_pid, session_of
from sandboxapp.safepath import DesktopUser
from sandboxapp.supervisor import Relay, Supervisor, TextSink

NSPAWN_NOISE = (NOISE_PREFIX, "Trying to halt container. Send SIGTERM again")


@dataclass(frozen=True)
class ContainerRequest:
    plan: LaunchPlan
    user: DesktopUser
    trusted_profile: bool  # from a root-owned profile directory
    sound: SoundPaths | None
    # The user's directory holding the sandbox's untrusted X authorization (x11auth.py).
    x11_dir: Path | None = None


class SpawnedChild:
    """A child started without subprocess (by a prestart), as supervising it needs it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int:
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


@dataclass(frozen=True)
class Started:
    """A container whose app waits at its gate."""

    process: subprocess.Popen[bytes] | SpawnedChild
    gate_fd: int


def open_gate(started: Started) -> None:
    os.write(started.gate_fd, b"go\n")


# nspawn runs as the first process of a PID namespace of its own, made by unshare: when nspawn
# dies (the launcher's parent-death signal kills unshare, which kills nspawn), the kernel kills
# everything in that namespace, the container included. nspawn alone would leave its container
# running: nothing kills it where systemd does not track nspawn's unit.
PID_NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGKILL", "--"]


def _chain(spawned_pid: int) -> list[Any]:
    """The processes from the one the launcher spawned down to the container's init: unshare,
    nspawn, nspawn's stub init (as far as they exist yet, or still)."""
    import psutil  # off the launch path: only needed here

    chain = []
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(spawned_pid)
        chain.append(process)
        while len(chain) < 3 and (children := process.children()):
            process = children[0]
            chain.append(process)
    return chain


def container_init(spawned_pid: int) -> int | None:
    """The host pid of the container's PID 1 (nspawn's stub init); None while it starts or
    stops."""
    chain = _chain(spawned_pid)
    return int(chain[2].pid) if len(chain) == 3 else None


def stop_targets(chain: list[Any]) -> list[Any]:
    """Of the chain from _chain, the processes a graceful stop signals: the app (the child
    of the container's PID 2, launchplan.APP_KEEPER) and what it left in its session after it
    exited (the new instance of a program that restarted itself), not their children, whom
    the app stops itself."""
    import psutil  # off the launch path: only needed here

    if len(chain) < 3:
        return []
    targets = []
    with contextlib.suppress(psutil.Error):
        orphans = chain[2].children()
        keeper = next((p for p in orphans if namespace_pid(p.pid) == 2), None)
        if keeper is None:
            return []
        targets = keeper.children()
        targets += [p for p in orphans
                    if p.pid != keeper.pid and session_of(p.pid) == keeper.pid]
    return targets


def stop_app(spawned_pid: int) -> None:
    """A graceful stop: SIGTERM to the app itself, so it can save its work. Signalling nspawn
    instead would SIGKILL it, and its stub init's own stop sends SIGHUP too, which ends most
    programs at once; nspawn is signalled only while there is no app yet (or any more)."""
    import psutil  # off the launch path: only needed here

    with contextlib.suppress(psutil.Error):
        chain = _chain(spawned_pid)
        targets = stop_targets(chain)
        if not targets:
            # unshare waits for nspawn with SIGTERM blocked: a signal for it goes to nspawn.
            targets = chain[1:2] or chain[:1]
        for process in targets:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGTERM)


class ContainerSide:
    def __init__(self, supervisor: Supervisor, request: ContainerRequest, stderr: TextSink,
                 control_fd: int | None = None, relay: Relay | None = None) -> None:
        self.supervisor = supervisor
        self.request = request
        self.stderr = stderr
        self.control_fd = control_fd
        self.relay = relay or Relay()

    def _layer(self, stack: ExitStack) -> Path:
        plan = self.request.plan
        assert plan.image is not None
        self.supervisor.add(stack, "layer", path=str(plan.layer_root))
        state = plan.state_root / str(self.request.user.uid) if plan.state_root else None
        return create_layer(plan.layer_root, plan.image.rootfs, state=state)

    def _checked_paths(self) -> list[tuple[Path, bool, str, int | None]]:
        """(host path, trusted, what, required file type) for every host path the container
        will see."""
        request = self.request
        plan = request.plan
        paths: list[tuple[Path, bool, str, int | None]] = [
            (p.host, False, "persistent directory", stat.S_IFDIR) for p in plan.persist
        ]
        paths += [(Path(b.host), request.trusted_profile, "sandbox.bind_ro", None)
                  for b in plan.profile.sandbox.bind_ro]
        if plan.display is not None:
            paths.append((plan.display.socket, True, "X display socket", stat.S_IFSOCK))
        if request.x11_dir is not None:
            paths.append((request.x11_dir, False, "X directory", stat.S_IFDIR))
        if request.sound is not None:
            paths.append((request.sound.dir, False, "sound directory", stat.S_IFDIR))
        return paths

    def _stage(self, layer_dir: Path) -> dict[Path, Path]:
        staging = layer_dir / "binds"
        staging.mkdir(mode=0o700, exist_ok=True)
        staged: dict[Path, Path] = {}
        user = self.request.user
        for index, (path, trusted, what, file_type) in enumerate(self._checked_paths()):
            target = staging / str(index)
            try:
                stage_owned(str(path), user.uid, user.gid, str(target), trusted=trusted,
                            file_type=file_type)
            except nofollow.Refused as exc:
                raise SandboxError(f"{what}: {exc}", status=ExitStatus.LAUNCHER) from None
            except OSError as exc:
                raise SandboxError(f"cannot stage {path} for the sandbox: {exc.strerror}",
                                   status=ExitStatus.LAUNCHER) from None
            staged[path] = target
        return staged

    def _gate(self, stack: ExitStack) -> tuple[Path, int]:
        gate = self.request.plan.layer_root / "gate"
        fd = make_gate(str(gate))
        stack.callback(os.close, fd)
        return gate, fd

    def _spawn_argv(self, spec: LaunchSpec) -> list[str]:
        # If the launcher is killed, unshare is killed with it, and nspawn and its container
        # with that.
        return ["setpriv", "--pdeathsig", "KILL", "--", *PID_NAMESPACE,
                *launch_argv(spec, host_facts())]

    def _container_data(self, spec: LaunchSpec) -> dict[str, Any]:
        plan = self.request.plan
        return {"machine": plan.machine, "pid": None, "started": None, "uid": spec.ids.base,
                "user": self.request.user.uid, "profile_file": str(plan.profile.path)}

    def ticket_body(self) -> dict[str, Any]:
        """What start does, as prestart.py does it from a ticket: for a stateless profile,
        its sound (if any) on a socket of its own."""
        request = self.request
        plan = request.plan
        assert plan.image is not None
        layer = plan.layer_root
        checked = self._checked_paths()
        staged = {path: layer / "binds" / str(index) for index, (path, *_) in enumerate(checked)}
        spec = launch_spec(plan, layer / "merged", sound=request.sound, gate=layer / "gate",
                           staged=staged, x11_dir=request.x11_dir)
        # The prestart creates these if they are missing: taken back (if still empty) last.
        made = {request.sound.dir: SOUND_DIR_MODE} if request.sound is not None else {}
        if request.x11_dir is not None:
            made[request.x11_dir] = 0o700
        entries: list[dict[str, Any]] = [
            {"kind": "empty-dir", "path": str(path), "user": request.user.uid} for path in made]
        entries += [{"kind": "layer", "path": str(layer)},
                    {"kind": "container", **self._container_data(spec),
                     "pid": prestart.CONTAINER_PID, "started": prestart.CONTAINER_STARTED}]
        entries = [{"id": index, **entry} for index, entry in enumerate(entries, 1)]
        run_dir = self.supervisor.run_dir
        name = plan.profile.name
        return {
            "profile": name,
            "record": str(run_dir.record_path(name)),
            "lock": str(run_dir.lock_path(name)),
            "record_text": record_text(name, prestart.LAUNCHER_PID, prestart.LAUNCHER_STARTED,
                                       entries, len(entries) + 1),
            "layer": str(layer),
            "rootfs": str(plan.image.rootfs),
            "marker": layer_marker(plan.image.rootfs),
            "user": (request.user.uid, request.user.gid),
            "stage": [(str(path), trusted, file_type, made.get(path))
                      for path, trusted, _, file_type in checked],
            "argv": self._spawn_argv(spec),
            "env": self._spawn_env(),
        }

    def _spawn_env(self) -> dict[str, str]:
        return base_env({"TERM": os.environ.get("TERM", "dumb")})

    def adopt(self, stack: ExitStack, prestarted: prestart.Prestarted) -> Started:
        """The container a prestart started from a ticket that ticket_body matches."""
        assert prestarted.pid is not None and prestarted.gate_fd is not None
        assert prestarted.stderr_fd is not None and prestarted.stdout_fd is not None
        stack.callback(os.close, prestarted.gate_fd)
        stdout = os.fdopen(prestarted.stdout_fd, "rb")
        stack.callback(stdout.close)
        stderr = os.fdopen(prestarted.stderr_fd, "rb")
        stack.callback(stderr.close)
        self._relay(stdout, stderr)
        return Started(SpawnedChild(prestarted.pid), prestarted.gate_fd)

    def _relay(self, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.relay.raw(stdout, sys.stdout.fileno())
        self.relay.lines(io.TextIOWrapper(stderr, errors="replace"), self.stderr, NSPAWN_NOISE)

    def run(self, stack: ExitStack) -> int:
        """Start the container and let the app start at once."""
        started = self.start(stack)
        open_gate(started)
        return self.supervise(started)

    def start(self, stack: ExitStack) -> Started:
        """Start the container, with the app held at its gate."""
        plan = self.request.plan
        merged = self._layer(stack)
        self.supervisor.check_interrupted()
        staged = self._stage(plan.layer_root)
        gate, gate_fd = self._gate(stack)
        spec = launch_spec(plan, merged, sound=self.request.sound, gate=gate, staged=staged,
                           x11_dir=self.request.x11_dir)
        entry = self.supervisor.add(stack, "container", **self._container_data(spec))
        self.supervisor.check_interrupted()
        # The container gets no terminal: no input, its output through pipes that the
        # launcher copies, and a session of its own, so that Ctrl-C or a signal to the
        # launcher's process group reaches only the launcher, which stops the app gracefully
        # (nspawn itself would SIGKILL it). A process inside cannot push input into the user's
        # shell (TIOCSTI) through a terminal it does not have.
        process = subprocess.Popen(
            self._spawn_argv(spec),
            env=self._spawn_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        pid, started = process_identity(process.pid)
        assert self.supervisor.record is not None
        self.supervisor.record.update(entry, pid=pid, started=started)
        assert process.stdout is not None and process.stderr is not None
        self._relay(process.stdout, process.stderr)
        return Started(process, gate_fd)

    def supervise(self, started: Started) -> int:
        process = started.process
        status = self.supervisor.wait(process, on_stop=lambda: stop_app(process.pid),
                                      on_timeout=process.kill, control_fd=self.control_fd)
        self.relay.join()
        return status
