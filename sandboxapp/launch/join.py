"""A second launch of a running profile joins it: the command runs inside the running
container (its namespaces, its root, as its root user), the way clicking a browser's menu entry
again opens a new window in the running browser. The first launch keeps owning the cleanup."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import PurePosixPath

from sandboxapp.command import base_env, run_without_terminal
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features import features_for, naming
from sandboxapp.features.spec import container_env
from sandboxapp.fs.safepath import DesktopUser
from sandboxapp.host.display import Display
from sandboxapp.paths import ROOT_PATH
from sandboxapp.plan import LaunchPlan, with_handed_at
from sandboxapp.system.containertree import container_init
from sandboxapp.system.handed import HandedFiles
from sandboxapp.undo.entries import NestedX11Entry
from sandboxapp.undo.ledger import Record, RunDir


def running_sandbox(run_dir: RunDir, plan: LaunchPlan,
                    user: DesktopUser) -> tuple[int, LaunchPlan]:
    """The host pid of the running container's PID 1, for a launch this user made, and the
    plan as that sandbox uses it: the display of its own nested server, as the running
    launch's record says (else the plan's: a trusted display is the user's)."""
    profile = plan.profile.name
    record = Record.load(run_dir.record_path(profile))
    if record is None or not record.launcher_alive:
        raise SandboxError(f"{profile} is not running", status=ExitStatus.LAUNCHER)
    display = plan.display
    for entry in record.entries:
        if isinstance(entry, NestedX11Entry) and entry.display is not None:
            display = Display(entry.display)
    for entry in record.containers():
        if entry.pid is None:
            continue
        if user.uid not in (0, entry.user):
            raise SandboxError(f"{profile} is running for another user",
                               status=ExitStatus.LAUNCHER)
        init = container_init(entry.pid)
        if init is not None:
            return init, dataclasses.replace(plan, display=display)
        break
    raise SandboxError(f"{profile} is starting or stopping; try again in a moment",
                       status=ExitStatus.LAUNCHER)


def join_argv(init_pid: int, plan: LaunchPlan, command: Sequence[str]) -> list[str]:
    # The running launch's directories are bound already: only the environment is used.
    features = features_for(plan, naming(plan))
    env = [("PATH", ":".join(ROOT_PATH)), ("HOME", "/root"), ("USER", "root"),
           *container_env(plan, features)]
    return [
        "nsenter", f"--target={init_pid}", "--mount", "--uts", "--ipc", "--net", "--pid",
        # Entering the user namespace makes the command the container's root, mapped to the
        # image's UID block like everything else in it.
        "--user", "--root", "--wd",
        "--", "/usr/bin/env", "-i", *(f"{key}={value}" for key, value in env), *command,
    ]


def hand_to_running(run_dir: RunDir, plan: LaunchPlan, user: DesktopUser,
                    opened: Sequence[tuple[int, str]]) -> list[PurePosixPath]:
    """Hand the user's running sandbox these files (open for reading, as the user could, each
    with its name); where each went inside."""
    running_sandbox(run_dir, plan, user)  # it runs, and it is this user's
    return _hand(plan, opened)


def _hand(plan: LaunchPlan, opened: Sequence[tuple[int, str]]) -> list[PurePosixPath]:
    if plan.image is None or not (plan.layer_root / "files").is_dir():
        raise SandboxError(f"{plan.profile.name} was started before files could be handed to "
                           "it", hint="start it again", status=ExitStatus.LAUNCHER)
    handed = HandedFiles(plan.layer_root, plan.image.meta.uid_range.base)
    try:
        return [handed.hand(fd, name) for fd, name in opened]
    finally:
        handed.close()


def join(run_dir: RunDir, plan: LaunchPlan, user: DesktopUser,
         opened: Sequence[tuple[int, str]] = ()) -> int:
    """Run the plan's command in the user's running sandbox, handed these files first (the
    running sandbox numbers them its way; the command names each where it went)."""
    init, plan = running_sandbox(run_dir, plan, user)
    if opened:
        plan = with_handed_at(plan, _hand(plan, opened))
    argv = join_argv(init, plan, plan.command)
    return run_without_terminal(argv, base_env())
