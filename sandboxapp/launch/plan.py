"""What one launch of a profile will do, worked out before anything is changed.

`run --dry-run` prints this plan; the launcher carries it out.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sandboxapp.errors import SandboxError
from sandboxapp.host.display import Display, parse_display
from sandboxapp.host.sound import SoundPaths
from sandboxapp.image.store import Image, ImageStore
from sandboxapp.launch.hostfacts import HostFacts
from sandboxapp.launch.nspawn import Bind, LaunchSpec, launch_argv
from sandboxapp.paths import Locations
from sandboxapp.profile.model import Network, Profile

# Where the per-sandbox sound socket and its client configuration appear in the container.
PULSE_DIR = PurePosixPath("/run/sandboxapp/pulse")
PULSE_SOCKET = PULSE_DIR / "native"
PULSE_CLIENT_CONF = PULSE_DIR / "client.conf"
# Shared memory needs the host's IPC namespace, which the container does not have; a client
# inside must never start a sound server of its own either.
PULSE_CLIENT_CONF_TEXT = "autospawn = no\nenable-shm = no\n"
# The container has its own IPC namespace, so MIT-SHM to the host's X server cannot work:
# these tell Qt and other toolkits not to try (the same variables x11docker sets).
# The sandbox's own session bus, started before the app (dbus-daemon --fork returns once the
# bus is ready) and gone with the container.
SESSION_BUS = "unix:path=/run/sandboxapp-session-bus"
SESSION_BUS_WRAPPER = (
    "/bin/sh", "-c",
    f"dbus-daemon --session --address={SESSION_BUS} --fork --nopidfile --syslog-only"
    ' && exec "$@"',
    "sh",
)
NO_MITSHM_ENV = (("QT_X11_NO_MITSHM", "1"), ("_X11_NO_MITSHM", "1"), ("_MITSHM", "0"))
# The app waits at this gate (a FIFO the launcher holds open) until its grants are made: the
# container can then start while the launcher is still at work.
GATE = "/run/sandboxapp/gate"
# The sandbox's X directory (its Xauthority file, x11auth.py): named X11_DIR beside the sound
# directories on the host (no profile is named so), bound read-only here inside.
X11_DIR = ".x11"
X11_CONTAINER_DIR = PurePosixPath("/run/sandboxapp/x11")
# PID 2 of the container, below nspawn's stub init. It waits at the gate, runs the app, and
# then stays while processes the app left in its session (sid 2) still run: a program that
# restarts itself (Firefox after startup crashes, in safe mode, after an update) starts its
# new instance and exits 0, and nspawn would end the container, new instance and all, the
# moment PID 2 exits. Processes that made a session of their own (dbus-daemon --fork) do not
# hold it. Its no-op traps keep a stop signal meant for the app from ending it; caught
# signals are reset for the app, which sees the default dispositions. The launcher signals
# the app itself (container.stop_targets), not this shell. A program that exits at once ends
# the container at once: the loop finds nobody else.
APP_KEEPER = (
    f"read -r _ < {GATE} || exit 125\n"
    "trap : TERM HUP INT\n"
    # The shell's own messages ("Terminated" when the app is stopped) go nowhere; the app,
    # in a subshell that becomes it, gets the error output.
    "exec 3>&2 2>/dev/null\n"
    '(exec 2>&3 3>&-; exec "$@")\n'
    "status=$?\n"
    "while :; do\n"
    "  left=\n"
    "  for stat in /proc/[0-9]*/stat; do\n"
    "    line=\n"
    '    { read -r line < "$stat"; } 2>/dev/null\n'
    '    [ -n "$line" ] || continue\n'
    '    pid=${line%% *}\n'
    '    set -- ${line##*) }\n'
    '    [ "$pid" != $$ ] && [ "$4" = $$ ] && [ "$1" != Z ] && left=1 && break\n'
    "  done\n"
    '  [ -z "$left" ] && exit "$status"\n'
    "  sleep 0.2\n"
    "done\n"
)
GATE_WRAPPER = ("/bin/sh", "-c", APP_KEEPER, "sh")


@dataclass(frozen=True)
class PersistDir:
    container: PurePosixPath
    host: Path


@dataclass(frozen=True)
class LaunchPlan:
    profile: Profile
    image: Image | None
    image_path: Path
    layer_root: Path
    # A stateful profile's changes, kept between runs: one directory below it per user.
    state_root: Path | None
    persist: tuple[PersistDir, ...]
    display: Display | None
    command: tuple[str, ...]
    # A desktop user's launch through the helper: "uUID", which keeps its layer and machine
    # apart from another user's of the same profile (and from root's own).
    instance: str | None = None
    # `run --command PROG`: the program run in place of the profile's command.
    program: str | None = None

    @property
    def extra_args(self) -> tuple[str, ...]:
        """The arguments given after the profile's command (or after --command's PROG)."""
        return self.command[1:] if self.program else self.command[len(self.profile.command):]

    @property
    def machine(self) -> str:
        # Machine names are host names: no '_'.
        name = "sandboxapp-" + self.profile.name.replace("_", "-")
        return f"{name}-{self.instance}" if self.instance else name


def persist_host_dir(data_root: Path, container: PurePosixPath) -> Path:
    """The host directory kept for a persistent container path: the same path below the
    profile's data directory, so a user finds and backs up files where they expect them."""
    return data_root.joinpath(*container.parts[1:])


def plan_launch(
    profile: Profile,
    extra_args: Sequence[str],
    locations: Locations,
    environ: Mapping[str, str] | None = None,
    instance: str | None = None,
    program: str | None = None,
) -> LaunchPlan:
    """program: run it, with extra_args, in place of the profile's command."""
    environ = os.environ if environ is None else environ
    store = ImageStore(locations.image_dir)
    data_root = locations.data_home / "sandboxapp" / profile.name
    display = parse_display(environ.get("DISPLAY")) if profile.sandbox.x11 else None
    return LaunchPlan(
        profile=profile,
        image=store.get(profile.name),
        image_path=store.image_path(profile.name),
        # '@' is in no profile name: an instance's layer is never another profile's.
        layer_root=store.root / ".layers" / (f"{profile.name}@{instance}" if instance
                                             else profile.name),
        state_root=None if profile.sandbox.stateless else store.root / ".state" / profile.name,
        persist=tuple(
            PersistDir(path, persist_host_dir(data_root, path)) for path in profile.sandbox.persist
        ),
        display=display,
        command=(program, *extra_args) if program else (*profile.command, *extra_args),
        instance=instance,
        program=program,
    )


def container_env(plan: LaunchPlan, *, sound: bool,
                  x11_auth: bool = False) -> tuple[tuple[str, str], ...]:
    env: list[tuple[str, str]] = []
    if plan.display is not None:
        env.append(("DISPLAY", plan.display.name))
        env.extend(NO_MITSHM_ENV)
    if x11_auth:
        env.append(("XAUTHORITY", str(X11_CONTAINER_DIR / "Xauthority")))
    if sound:
        env.append(("PULSE_SERVER", f"unix:{PULSE_SOCKET}"))
        env.append(("PULSE_CLIENTCONFIG", str(PULSE_CLIENT_CONF)))
    if plan.profile.sandbox.session_bus:
        env.append(("DBUS_SESSION_BUS_ADDRESS", SESSION_BUS))
    env.extend(plan.profile.sandbox.env)
    return tuple(env)


def launch_spec(
    plan: LaunchPlan,
    rootfs: Path,
    *,
    sound: SoundPaths | None,
    gate: Path,
    staged: Mapping[Path, Path] | None = None,
    x11_dir: Path | None = None,
) -> LaunchSpec:
    """The nspawn launch for a plan, once the layer, the sound directory and the gate exist.

    staged: host paths replaced by the place where the launcher has already bind-mounted the
    very file it checked (so nspawn never resolves a path the user could swap meanwhile).
    """
    if plan.image is None:
        raise SandboxError(f"the image for {plan.profile.name!r} is not built")
    staged = staged or {}

    def source(path: Path) -> Path:
        return staged.get(path, path)

    binds: list[Bind] = [
        Bind(source(p.host), str(p.container), read_only=False, root_idmap=True)
        for p in plan.persist
    ]
    binds += [Bind(source(Path(b.host)), str(b.container)) for b in plan.profile.sandbox.bind_ro]
    if plan.display is not None:
        # Only the display's own socket, read-only: not the whole socket directory.
        binds.append(Bind(source(plan.display.socket), str(plan.display.socket)))
    if x11_dir is not None:
        # The user's directory, its files the container root's own (Firefox will not read an
        # XAUTHORITY owned by nobody).
        binds.append(Bind(source(x11_dir), str(X11_CONTAINER_DIR), root_idmap=True))
    if sound is not None:
        # The directory: its socket appears there when the launcher serves it, which may be
        # after the container has started.
        binds.append(Bind(source(sound.dir), str(PULSE_DIR)))
    binds.append(Bind(gate, GATE))
    command = plan.command
    if plan.profile.sandbox.session_bus:
        command = (*SESSION_BUS_WRAPPER, *command)
    return LaunchSpec(
        rootfs=rootfs,
        machine=plan.machine,
        ids=plan.image.meta.uid_range,
        private_network=plan.profile.sandbox.network is Network.NONE,
        binds=tuple(binds),
        env=container_env(plan, sound=sound is not None, x11_auth=x11_dir is not None),
        command=(*GATE_WRAPPER, *command),
    )


def describe_plan(plan: LaunchPlan, facts: HostFacts) -> str:
    profile = plan.profile
    lines = [f"profile:  {profile.name} ({profile.origin}: {profile.path})"]
    if plan.image is None:
        lines.append(f"image:    not built; build it with: sandboxapp image build {profile.name}")
    else:
        meta = plan.image.meta
        lines.append(f"image:    {plan.image.path} ({meta.suite}, built {meta.built_at}, "
                     f"host UIDs {meta.uid_range})")
    if plan.state_root is None:
        lines.append(f"layer:    a throw-away overlay under {plan.layer_root}, deleted at exit")
    else:
        lines.append(f"layer:    an overlay whose changes are kept for your next run in "
                     f"{plan.state_root}, a directory per user (stateless = false)")
    for p in plan.persist:
        lines.append(f"persist:  {p.container} kept in {p.host} (owned by you)")
    if plan.display is not None and profile.sandbox.x11_trusted:
        uid = str(plan.image.meta.uid_base) if plan.image else "the image's first UID"
        lines.append(f"X11:      TRUSTED (x11 = \"trusted\"): grant localuser:#{uid} on "
                     f"{plan.display.name} while it runs, as a client that can read and type "
                     f"into every window; bind {plan.display.socket} read-only")
    elif plan.display is not None:
        lines.append(f"X11:      an untrusted authorization on {plan.display.name} while it runs "
                     "(kept from other windows, no XTEST), revoked at exit; bind "
                     f"{plan.display.socket} read-only")
    else:
        lines.append("X11:      none")
    if profile.sandbox.pulseaudio:
        lines.append(f"sound:    a socket of its own at {PULSE_SOCKET} inside, served by the "
                     "launcher while it runs: playback only"
                     + (" and recording (microphone = true)" if profile.sandbox.microphone
                        else "") + "; modules, other programs' streams and devices are refused")
    else:
        lines.append("sound:    none")
    lines.append(f"network:  {profile.sandbox.network.value}")
    if plan.image is not None:
        spec = launch_spec(
            plan,
            plan.layer_root / "merged",
            sound=SoundPaths(plan.layer_root / "sound") if profile.sandbox.pulseaudio else None,
            gate=plan.layer_root / "gate",
            x11_dir=(plan.layer_root / X11_DIR
                     if plan.display is not None and not profile.sandbox.x11_trusted else None),
        )
        lines.append("command:  " + shlex.join(launch_argv(spec, facts)))
    else:
        lines.append("command:  " + shlex.join(plan.command) + " (inside the sandbox)")
    return "\n".join(lines)
