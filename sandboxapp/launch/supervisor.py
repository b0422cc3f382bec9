"""What every long-running side of a launch shares: its ledger record, undo registration, and
signals that only set a flag, so that the ExitStack always unwinds in the ordinary way.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, Protocol, TypeVar

from sandboxapp.errors import SandboxError
from sandboxapp.launch.recovery import reconcile
from sandboxapp.system.control import ControlChannel, Message, Word
from sandboxapp.undo.entries import Entry, try_undo
from sandboxapp.undo.ledger import MAX_STOP_GRACE, Record, RunDir

E = TypeVar("E", bound=Entry)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
# How long a stopping app gets to save its state before it is killed.
STOP_TIMEOUT = 10.0


class ChildProcess(Protocol):
    """A child to wait for (a subprocess.Popen)."""

    @property
    def pid(self) -> int: ...

    def wait(self) -> int: ...


class Supervisor:
    def __init__(self, run_dir: RunDir, warn: Callable[[str], None], *,
                 signals_stop: bool = True) -> None:
        self.run_dir = run_dir
        self.warn = warn
        # False where a launcher says when to stop (the helper's side, on its control
        # channel): the signals a terminal sends its whole process group are then ignored
        # here, and the launcher, which got them too, first asks the app to quit.
        self.signals_stop = signals_stop
        self.signalled: int | None = None
        # Set when the launch must stop for a reason other than a signal (its launcher is gone).
        self.stop_requested = False
        self.escalations = 0
        # How long the app gets once asked to stop: STOP_TIMEOUT, or what `sandboxapp stop`
        # (through the run directory, or the launcher through the control input) asked for.
        self.grace = STOP_TIMEOUT
        self.wake_read, self.wake_write = socket.socketpair()
        self.record: Record | None = None

    # -- signals -----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.signalled is None:
            self.signalled = signum
        else:
            self.escalations += 1  # a second signal: do not wait any longer

    def install_signal_handlers(self, stack: ExitStack) -> None:
        self.wake_write.setblocking(False)
        previous_fd = signal.set_wakeup_fd(self.wake_write.fileno(), warn_on_full_buffer=False)
        stack.callback(signal.set_wakeup_fd, previous_fd)
        handler = self._on_signal if self.signals_stop else signal.SIG_IGN
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, handler)
            stack.callback(signal.signal, signum, previous)
        stack.callback(self.wake_read.close)
        stack.callback(self.wake_write.close)

    @property
    def stopping(self) -> bool:
        return self.signalled is not None or self.stop_requested

    def check_interrupted(self) -> None:
        if self.signalled is not None:
            name = signal.Signals(self.signalled).name
            raise SandboxError(f"stopped by {name} before the app started",
                               status=128 + self.signalled)
        if self.stop_requested:
            raise SandboxError("the launcher went away before the app started")

    # -- the record --------------------------------------------------------------------------

    def begin(self, stack: ExitStack, profile: str, wait: float = 0) -> bool:
        """Take the profile's lock, clean up after dead launchers, start this launch's record;
        False (and nothing done) when another launch of the profile holds the lock (for
        longer than `wait` seconds)."""
        if not stack.enter_context(self.run_dir.profile_lock(profile, wait=wait)):
            return False
        self.install_signal_handlers(stack)
        for message in reconcile(self.run_dir, holding=profile):
            self.warn(message)
        self.record = self.run_dir.new_record(profile)
        stack.callback(self._forget_record)
        return True

    def _forget_record(self) -> None:
        assert self.record is not None
        if not self.record.entries:
            self.record.delete()

    def add(self, stack: ExitStack, entry: E) -> E:
        """Record a resource and register its undo, both before it is made."""
        record = self.record
        assert record is not None
        record.add(entry)

        def undo() -> None:
            if record.holds(entry):
                problem = try_undo(entry, recovering=False)
                if problem is not None:
                    self.warn(f"could not undo {entry.KIND}: {problem}; "
                              "'sandboxapp cleanup' tries again")
                    return
                record.drop(entry)

        stack.callback(undo)
        return entry

    # -- waiting -----------------------------------------------------------------------------

    def wait_for_open(self, process: ChildProcess, control: ControlChannel,
                      on_file: Callable[[Message], None] | None = None) -> bool:
        """Wait for "open" on the control channel: True once it came; False when the channel
        ends or says anything else first (the launcher gave up), or the process ended. A
        signal meanwhile raises, as check_interrupted does. on_file: what takes a "file"
        message (one that comes when there is none is the launcher's giving up too)."""
        pidfd = os.pidfd_open(process.pid)
        try:
            while True:
                ready, _, _ = select.select(
                    [pidfd, self.wake_read.fileno(), control.fileno()], [], [])
                if self.wake_read.fileno() in ready:
                    with contextlib.suppress(BlockingIOError):
                        self.wake_read.recv(64)
                self.check_interrupted()
                if pidfd in ready:
                    return False
                if control.fileno() not in ready:
                    continue
                message = self._receive(control)
                if message is not None and message.word is Word.FILE and on_file is not None:
                    on_file(message)
                    continue
                if message is None or message.word is not Word.OPEN:
                    self._take_stop(message)
                    return False
                return True
        finally:
            os.close(pidfd)

    def _receive(self, control: ControlChannel) -> Message | None:
        """The next message; None for the end of the channel, or one refused (a launcher that
        says what it may not has given up all the same)."""
        try:
            return control.receive()
        except SandboxError as error:
            self.warn(f"stopping: {error.message}")
        except OSError:
            pass
        return None

    def _take_stop(self, message: Message | None) -> None:
        """A message that asks to stop (anything but "stop SECONDS" asks with the default
        grace), or the end of the channel."""
        if message is not None and message.word is Word.STOP:
            with contextlib.suppress(ValueError):
                grace = float(message.text)
                if 0 < grace <= MAX_STOP_GRACE:
                    self.grace = grace
        if self.stop_requested:
            self.escalations += 1
        self.stop_requested = True

    def wait(
        self,
        process: ChildProcess,
        on_stop: Callable[[], None],
        on_timeout: Callable[[], None],
        control: ControlChannel | None = None,
        ask_to_quit: Callable[[], bool] | None = None,
        on_file: Callable[[Message], None] | None = None,
    ) -> int:
        """Wait for process. A signal, or a message or the end of the control channel (the
        launcher asks to stop, or is gone), first asks the app to quit as a desktop's logout
        does (ask_to_quit: True when it could ask) and gives it the grace (STOP_TIMEOUT unless
        a stop asked for another) to do so; then, or at once where it could not be asked,
        on_stop, and on_timeout after the grace; a second signal or control event moves on to
        the next step at once, and on_timeout comes again every STOP_TIMEOUT seconds until the
        process is gone. on_file: what takes a "file" message."""
        pidfd = os.pidfd_open(process.pid)
        deadline: float | None = None
        quitting = False
        escalated = 0
        try:
            while True:
                waitables = [pidfd, self.wake_read.fileno()]
                if control is not None:
                    waitables.append(control.fileno())
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select(waitables, [], [], timeout)
                if pidfd in ready:
                    break
                if self.wake_read.fileno() in ready:
                    with contextlib.suppress(BlockingIOError):
                        self.wake_read.recv(64)
                if control is not None and control.fileno() in ready:
                    message = self._receive(control)
                    if message is None:
                        control = None  # the launcher is gone: nothing more will come
                    if message is not None and message.word is Word.FILE and on_file:
                        on_file(message)
                    else:
                        self._take_stop(message)
                if self.stopping and deadline is None:
                    if self.record is not None:
                        asked = self.run_dir.take_stop_grace(self.record.profile, os.getpid())
                        self.grace = asked if asked is not None else self.grace
                    quitting = ask_to_quit is not None and ask_to_quit()
                    if not quitting:
                        on_stop()
                    deadline = time.monotonic() + self.grace
                elif deadline is not None and (time.monotonic() >= deadline
                                               or self.escalations > escalated):
                    at_once = self.escalations > escalated
                    escalated = self.escalations
                    if quitting:
                        # It did not quit in time, or the user would not wait: signal it.
                        quitting = False
                        on_stop()
                        if not at_once:
                            deadline = time.monotonic() + STOP_TIMEOUT
                            continue
                    on_timeout()
                    deadline = time.monotonic() + STOP_TIMEOUT
        finally:
            os.close(pidfd)
        return process.wait()
