"""A launch's container as its features make it: what systemd-nspawn is given, and how
`run --dry-run` describes it."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from sandboxapp.features import Feature, features_for, naming
from sandboxapp.image.store import not_built
from sandboxapp.plan import LaunchPlan
from sandboxapp.system.handed import FILES_CONTAINER_DIR
from sandboxapp.system.hostfacts import HostFacts
from sandboxapp.system.nspawn import Bind, LaunchSpec, launch_argv

# The app waits at this gate (a FIFO the launcher holds open) until its grants are made: the
# container can then start while the launcher is still at work.
GATE = "/run/sandboxapp/gate"
# PID 2 of the container, below nspawn's stub init. It waits at the gate, runs the app, and
# then stays while processes the app left in its session (sid 2) still run: a program that
# restarts itself (Firefox after startup crashes, in safe mode, after an update) starts its
# new instance and exits 0, and nspawn would end the container, new instance and all, the
# moment PID 2 exits. Processes that made a session of their own (dbus-daemon --fork) do not
# hold it. Its no-op traps keep a stop signal meant for the app from ending it; caught
# signals are reset for the app, which sees the default dispositions. The launcher signals
# the app itself (system/containertree.py), not this shell. A program that exits at once ends
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



def container_env(plan: LaunchPlan,
                  features: Sequence[Feature]) -> tuple[tuple[str, str], ...]:
    """The app's environment: each feature's, then the profile's own."""
    return (*(pair for feature in features for pair in feature.env()),
            *plan.profile.sandbox.env)


def launch_spec(
    plan: LaunchPlan,
    rootfs: Path,
    features: Sequence[Feature],
    *,
    gate: Path,
    files: Path,
    staged: Mapping[Path, Path] | None = None,
) -> LaunchSpec:
    """The nspawn launch for a plan and its features, once the layer, the directories the
    features bind and the gate exist.

    staged: host paths replaced by the place where the launcher has already bind-mounted the
    very file it checked (so nspawn never resolves a path the user could swap meanwhile).
    """
    env = container_env(plan, features)
    if plan.image is None:
        raise not_built(plan.profile.name)
    staged = staged or {}

    def source(path: Path) -> Path:
        return staged.get(path, path)

    binds: list[Bind] = [bind for feature in features for bind in feature.binds(source)]
    binds.append(Bind(gate, GATE))
    binds.append(Bind(files, str(FILES_CONTAINER_DIR)))
    command = plan.command
    for feature in features:
        command = feature.wrap(command)
    return LaunchSpec(
        rootfs=rootfs,
        machine=plan.machine,
        ids=plan.image.meta.uid_range,
        private_network=any(feature.private_network() for feature in features),
        binds=tuple(binds),
        env=env,
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
    # The directories a launch would make, where it would make them.
    features = features_for(plan, naming(plan, plan.layer_root))
    if plan.display is None:
        lines.append("X11:      none")
    if not profile.sandbox.pulseaudio:
        lines.append("sound:    none")
    for feature in features:
        lines.extend(feature.describe())
    lines.extend(f"file:     {handed.host} read-only at {handed.inside}" for handed in plan.handed)
    if profile.sandbox.wayland and not (plan.wayland and plan.wayland.native):
        why = plan.wayland.why if plan.wayland is not None else "not a Wayland session"
        lines.append(f"Wayland:  not used: {why}")
    elif plan.wayland is not None:
        lines.append(f"          ({plan.wayland.why})")
    if plan.image is not None:
        spec = launch_spec(plan, plan.layer_root / "merged", features,
                           gate=plan.layer_root / "gate", files=plan.layer_root / "files")
        lines.append("command:  " + shlex.join(launch_argv(spec, facts)))
    else:
        lines.append("command:  " + shlex.join(plan.command) + " (inside the sandbox)")
    return "\n".join(lines)
