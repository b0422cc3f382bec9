"""A second launch of a running profile joins it: the command runs inside the running
container (its namespaces, its root, as its root user), the way clicking a browser's menu entry
again opens a new window in the running browser. The first launch keeps owning the cleanup."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO

from sandboxapp.command import base_env, spawn
from sandboxapp.errors import ExitStatus, SandboxError
from sandboxapp.features import features_for, naming
from sandboxapp.fs.safepath import DesktopUser
from sandboxapp.host.display import Display
from sandboxapp.launch.container import container_init
from sandboxapp.launch.spec import container_env
from sandboxapp.launch.supervisor import Relay
from sandboxapp.paths import ROOT_PATH
from sandboxapp.plan import LaunchPlan
from sandboxapp.undo.entries import NestedX11Entry
from sandboxapp.undo.ledger import Record, RunDir


def running_init(run_dir: RunDir, profile: str, user: DesktopUser) -> int:
    """The host pid of the running container's PID 1, for a launch this user made."""
    record = Record.load(run_dir.record_path(profile))
    if record is None or not record.launcher_alive:
        raise SandboxError(f"{profile} is not running", status=ExitStatus.LAUNCHER)
    for entry in record.containers():
        if entry.pid is None:
            continue
        if user.uid not in (0, entry.user):
            raise SandboxError(f"{profile} is running for another user",
                               status=ExitStatus.LAUNCHER)
        init = container_init(entry.pid)
        if init is not None:
            return init
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


def running_display(run_dir: RunDir, plan: LaunchPlan) -> Display | None:
    """The display the running launch's sandbox uses: its own nested server's, as that
    launch's record says; else the plan's (a trusted display is the user's)."""
    record = Record.load(run_dir.record_path(plan.profile.name))
    for entry in record.entries if record is not None else []:
        if isinstance(entry, NestedX11Entry) and entry.display is not None:
            return Display(entry.display)
    return plan.display


def join(run_dir: RunDir, plan: LaunchPlan, user: DesktopUser) -> int:
    init = running_init(run_dir, plan.profile.name, user)
    plan = dataclasses.replace(plan, display=running_display(run_dir, plan))
    return run_without_terminal(join_argv(init, plan, plan.command), base_env())


def run_without_terminal(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run a command that will be inside a sandbox (or reach into one) with pipes for its
    input and output, copied from and to ours, in a session of its own: it never holds the
    user's terminal, so it cannot push input into the user's shell (TIOCSTI), read keys meant
    for it, or take a terminal to be its controlling one. A signal that stops us goes on to it.
    """
    process = spawn(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, new_session=True)
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    relay = Relay()
    relay.raw(process.stdout, sys.stdout.fileno())
    relay.raw(process.stderr, sys.stderr.fileno())
    done = threading.Event()
    feeder = threading.Thread(target=_feed, args=(process.stdin, done), daemon=True)
    feeder.start()

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)

    previous = {sig: signal.signal(sig, forward)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        status = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        done.set()
    relay.join()
    return status


def _feed(stdin: IO[bytes], done: threading.Event) -> None:
    """Copy our input to the command's until it ends, or the command does. select's timeout
    lets a command that has ended stop the copy without taking the user's next keystroke."""
    try:
        while not done.is_set():
            try:
                readable, _, _ = select.select([0], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not readable:
                continue
            chunk = os.read(0, 1 << 16)
            if not chunk:
                return
            stdin.write(chunk)
            stdin.flush()
    except OSError:
        return  # the command closed its input, or our input is gone
    finally:
        with contextlib.suppress(OSError):
            stdin.close()
