"""The one place sandboxapp runs external commands.

Every command gets an explicit environment. `run` waits for it: its output goes to a log (when
one is given) and a short tail of it is kept, so that a failure becomes one SandboxError naming
the exact command (shell-quoted, ready to paste) and the last lines it printed. `spawn` starts a
long-running child (the container, the privileged helper, a joined command) whose streams the
caller relays (`Relay`); `run_attached` one that keeps the caller's terminal (an interactive
shell).
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal, overload

from sandboxapp.errors import SandboxError
from sandboxapp.output import TextSink
from sandboxapp.paths import ROOT_PATH

# A PATH that does not depend on the caller's: root runs these commands.
SYSTEM_PATH = ":".join(ROOT_PATH)
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
    proc = spawn(argv, env=env if env is not None else base_env(), stdin=stdin,
                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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


_Stream = int | IO[Any] | None


@overload
def spawn(argv: Sequence[str], *, env: Mapping[str, str], stdin: _Stream = ...,
          stdout: _Stream = ..., stderr: _Stream = ..., text: Literal[False] = ...,
          new_session: bool = ..., pass_fds: Sequence[int] = ...) -> subprocess.Popen[bytes]: ...


@overload
def spawn(argv: Sequence[str], *, env: Mapping[str, str], stdin: _Stream = ...,
          stdout: _Stream = ..., stderr: _Stream = ..., text: Literal[True],
          new_session: bool = ..., pass_fds: Sequence[int] = ...) -> subprocess.Popen[str]: ...


def spawn(argv: Sequence[str], *, env: Mapping[str, str], stdin: _Stream = subprocess.DEVNULL,
          stdout: _Stream = None, stderr: _Stream = None, text: bool = False,
          new_session: bool = False, pass_fds: Sequence[int] = ()) -> subprocess.Popen[Any]:
    """Start argv, with exactly env, and return at once. new_session: in a session of its own,
    so that no terminal of the caller's is the child's controlling one and a signal to the
    caller's process group does not reach it. pass_fds: descriptors it inherits (no other
    does). A missing program is a SandboxError."""
    try:
        return subprocess.Popen(list(argv), env=dict(env), stdin=stdin, stdout=stdout,
                                stderr=stderr, text=text, errors="replace" if text else None,
                                start_new_session=new_session, pass_fds=tuple(pass_fds))
    except FileNotFoundError as exc:
        raise SandboxError(
            f"{argv[0]}: command not found ({shlex.join(argv)})",
            hint="run the README's install command to install what sandboxapp needs",
        ) from exc


def run_attached(argv: Sequence[str], *, env: Mapping[str, str]) -> int:
    """Run argv on the caller's own terminal and streams (an interactive shell, or a helper
    that reports as it goes): its exit status."""
    return spawn(argv, env=env, stdin=None).wait()


def output_of(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> str:
    """Run a short query command and return what it printed."""
    return run(argv, env=env, capture=True).output


def program_exists(name: str) -> bool:
    path = os.environ.get("PATH", SYSTEM_PATH) + ":" + SYSTEM_PATH
    return any(os.access(os.path.join(d, name), os.X_OK) for d in path.split(":") if d)


class Relay:
    """Copies a child's output to where the user sees it, each stream on a thread of its own,
    and notes whether there was any: an app that ends at once without a word is named."""

    def __init__(self) -> None:
        self.seen = threading.Event()
        self._threads: list[threading.Thread] = []

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def lines(self, source: IO[str], target: TextSink, drop: tuple[str, ...] = ()) -> None:
        """Line by line (leaving out lines that start with `drop`): the error output, which
        goes into the run log too."""

        def copy() -> None:
            for line in source:
                if not line.startswith(drop):
                    self.seen.set()
                    target.write(line)
                    target.flush()

        self._start(copy)

    def raw(self, source: IO[Any], target_fd: int) -> None:
        """Byte for byte, as it comes (read below any buffer of source's): the standard
        output."""

        def copy() -> None:
            while True:
                try:
                    chunk = os.read(source.fileno(), 1 << 16)
                except (OSError, ValueError):  # closed under it: the launch is over
                    return
                if not chunk:
                    return
                self.seen.set()
                with contextlib.suppress(OSError):  # nobody reads it any more
                    while chunk:
                        chunk = chunk[os.write(target_fd, chunk):]

        self._start(copy)

    def join(self, timeout: float = 5) -> None:
        for thread in self._threads:
            thread.join(timeout=timeout)


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
