"""The one place sandboxapp runs external commands.

Every command gets an explicit environment, its output goes to a log (when one is given) and a
short tail of it is kept, so that a failure becomes one SandboxError naming the exact command
(shell-quoted, ready to paste) and the last lines it printed.
"""

from __future__ import annotations

import collections
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from sandboxapp.errors import SandboxError

# A PATH that does not depend on the caller's: root runs these commands.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TAIL_LINES = 15


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: the C locale, a fixed PATH, nothing inherited by accident."""
    env = {"PATH": SYSTEM_PATH, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    if extra:
        env.update(extra)
    return env


def describe_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    output: str


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log: IO[str] | None = None,
    check: bool = True,
    capture: bool = False,
    stdin: int | None = subprocess.DEVNULL,
    what: str | None = None,
    timeout: float | None = None,
) -> Result:
    """Run argv to completion.

    The output (stdout and stderr together) is written to `log` line by line as it comes, kept
    whole when `capture` is set, and its tail is always kept for the error message. With `check`,
    a non-zero exit raises SandboxError. A missing program raises SandboxError too.
    """
    argv = tuple(argv)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    captured: list[str] = []
    if log is not None:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
    try:
        proc = subprocess.Popen(
            argv,
            env=dict(env) if env is not None else base_env(),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except FileNotFoundError as exc:
        raise SandboxError(
            f"{argv[0]}: command not found",
            hint="run the README's install command to install what sandboxapp needs",
        ) from exc
    assert proc.stdout is not None
    # A command that outlives its timeout is killed; its output then ends.
    timer = threading.Timer(timeout, proc.kill) if timeout is not None else None
    if timer is not None:
        timer.start()
    with proc:
        for line in proc.stdout:
            tail.append(line.rstrip("\n"))
            if capture:
                captured.append(line)
            if log is not None:
                log.write(line)
                log.flush()
    returncode = proc.wait()
    if timer is not None:
        timer.cancel()
    if log is not None:
        log.write(f"# {describe_status(returncode)}\n")
        log.flush()
    if check and returncode != 0:
        raise SandboxError(
            f"{what + ': ' if what else ''}command failed ({describe_status(returncode)}): "
            f"{shlex.join(argv)}",
            detail="\n".join(tail) or None,
        )
    return Result(argv, returncode, "".join(captured) if capture else "\n".join(tail))


def output_of(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
    """Run a short query command and return what it printed."""
    return run(argv, env=env, capture=True).output


def program_exists(name: str) -> bool:
    path = os.environ.get("PATH", SYSTEM_PATH) + ":" + SYSTEM_PATH
    return any(os.access(os.path.join(d, name), os.X_OK) for d in path.split(":") if d)
