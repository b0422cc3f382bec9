"""A second launch of a running profile joins it: the command runs inside the running
container (its namespaces, its root, as its root user), the way clicking a browser's menu entry
again opens a new window in the running browser. The first launch keeps owning the cleanup."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from sandboxapp.command import base_env
from sandboxapp.container import container_init
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.launchplan import LaunchPlan, container_env
from sandboxapp.ledger import Record, RunDir
from sandboxapp.safepath import DesktopUser

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def running_init(run_dir: RunDir, profile: str, user: DesktopUser) -> int:
    """The host pid of the running container's PID 1, for a launch this user made."""
    record = Record.load(run_dir.record_path(profile))
    if record is None or not record.launcher_alive:
        raise SandboxError(f"{profile} is not running", status=ExitStatus.LAUNCHER)
    for entry in record.entries:
        if entry["kind"] != "container" or not isinstance(entry.get("pid"), int):
            continue
        if user.uid not in (0, entry.get("user")):
            raise SandboxError(f"{profile} is running for another user",
                               status=ExitStatus.LAUNCHER)
        init = container_init(entry["pid"])
        if init is not None:
            return init
        break
    raise SandboxError(f"{profile} is starting or stopping; try again in a moment",
                       status=ExitStatus.LAUNCHER)


def join_argv(init_pid: int, plan: LaunchPlan, command: Sequence[str]) -> list[str]:
    env = [("PATH", CONTAINER_PATH), ("HOME", "/root"), ("USER", "root"),
           *container_env(plan, sound=plan.profile.sandbox.pulseaudio,
                          x11_auth=plan.display is not None
                          and not plan.profile.sandbox.x11_trusted)]
    return [
        "nsenter", f"--target={init_pid}", "--mount", "--uts", "--ipc", "--net", "--pid",
        # Entering the user namespace makes the command the container's root, mapped to the
        # image's UID block like everything else in it.
        "--user", "--root", "--wd",
        "--", "/usr/bin/env", "-i", *(f"{key}={value}" for key, value in env), *command,
    ]


def join(run_dir: RunDir, plan: LaunchPlan, user: DesktopUser) -> int:
    init = running_init(run_dir, plan.profile.name, user)
    argv = join_argv(init, plan, plan.command)
    return subprocess.run(argv, env=base_env(), check=False).returncode
